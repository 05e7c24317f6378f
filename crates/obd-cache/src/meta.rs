//! The `.meta` file of a cached blob: a checksummed header and one checksummed record per
//! refill unit carrying the CRC32C of each 4 KiB block of that unit.
//!
//! ```text
//! header (96 bytes, little-endian)
//!   0  magic "OBDCACHE"      8  version (1)         12 refill (unit size, power of two)
//!   16 blob size            24 last used (Unix ms)   32 SHA-256 digest (32 raw bytes)
//!   64 reserved (zero)      92 CRC-32C of bytes 0..92
//! record i (at 96 + i * (8 + 4 * refill / 4096))
//!   0  state: 0 = absent, 0x50524553 ("SERP") = present
//!   4  CRC-32C of (i as u64 LE, state, crcs)
//!   8  CRC-32C of every 4 KiB block of the unit (the last block of the blob may be short;
//!      slots past the end of the blob are zero)
//! ```
//!
//! The parser is pure and total: any input gives `Ok` or an error, never a panic, and it
//! allocates at most in proportion to the input. A record that fails its check (torn write,
//! bit flip) is absent; a bad header makes the whole file unusable.

use obd_core::{Error, Result};

/// Length of the header.
pub const HEADER_LEN: usize = 96;
/// Magic bytes at offset 0.
pub const MAGIC: [u8; 8] = *b"OBDCACHE";
/// Format version written and accepted.
pub const VERSION: u32 = 1;
/// Record state word of a present unit.
pub const PRESENT: u32 = 0x5052_4553;
/// Verification block size: one CRC per 4 KiB of blob.
pub const BLOCK: u64 = 4096;
/// Largest blob size accepted (256 TiB), so every derived size fits comfortably in memory math.
pub const MAX_SIZE: u64 = 1 << 48;
/// Largest refill unit accepted (1 GiB).
pub const MAX_REFILL: u32 = 1 << 30;

/// The fields of a meta header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaHeader {
    /// Raw SHA-256 of the blob (the digest's hex, decoded).
    pub digest: [u8; 32],
    /// Blob size in bytes.
    pub size: u64,
    /// Unit size in bytes.
    pub refill: u32,
    /// Last use, milliseconds since the Unix epoch.
    pub last_used_ms: u64,
}

/// A parsed meta file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedMeta {
    /// The header.
    pub header: MetaHeader,
    /// Present units in increasing order: unit index and the CRCs of its blocks (only the
    /// blocks inside the blob).
    pub present: Vec<(u64, Vec<u32>)>,
    /// Records that were neither a clean absent record nor a valid present one.
    pub bad_records: usize,
}

/// Whether `refill` is an acceptable unit size: a power of two in `4096..=1 GiB`.
pub fn valid_refill(refill: u32) -> bool {
    refill.is_power_of_two() && u64::from(refill) >= BLOCK && refill <= MAX_REFILL
}

/// Number of units of a blob of `size` bytes with units of `unit` bytes (`unit` > 0).
pub fn unit_count(size: u64, unit: u64) -> u64 {
    size.div_ceil(unit.max(1))
}

/// Number of 4 KiB verification blocks of a blob of `size` bytes.
pub fn block_count(size: u64) -> u64 {
    size.div_ceil(BLOCK)
}

/// Length of one unit record for units of `refill` bytes.
pub fn record_len(refill: u32) -> usize {
    8 + 4 * (refill as usize / BLOCK as usize)
}

/// Full length of the meta file of a blob (header and every record).
pub fn full_len(size: u64, refill: u32) -> u64 {
    HEADER_LEN as u64 + unit_count(size, u64::from(refill)) * record_len(refill) as u64
}

/// Byte offset of unit `unit`'s record.
pub fn record_offset(refill: u32, unit: u64) -> u64 {
    HEADER_LEN as u64 + unit * record_len(refill) as u64
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// Encode a header.
pub fn encode_header(h: &MetaHeader) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&h.refill.to_le_bytes());
    b[16..24].copy_from_slice(&h.size.to_le_bytes());
    b[24..32].copy_from_slice(&h.last_used_ms.to_le_bytes());
    b[32..64].copy_from_slice(&h.digest);
    let crc = crc32c::crc32c(&b[..92]);
    b[92..96].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decode and check a header.
pub fn parse_header(b: &[u8]) -> Result<MetaHeader> {
    let Some(b) = b.get(..HEADER_LEN) else {
        return Err(Error::corrupt(format!(
            "cache meta file is {} bytes, shorter than its {HEADER_LEN}-byte header",
            b.len()
        )));
    };
    if b[0..8] != MAGIC {
        return Err(Error::corrupt("cache meta file has a bad magic").at_offset(0));
    }
    let crc = crc32c::crc32c(&b[..92]);
    if crc != le32(b, 92) {
        return Err(Error::checksum("cache meta header checksum mismatch").at_offset(92));
    }
    let version = le32(b, 8);
    if version != VERSION {
        return Err(Error::unsupported(format!(
            "cache meta version {version} (expected {VERSION})"
        ))
        .at_offset(8));
    }
    let refill = le32(b, 12);
    if !valid_refill(refill) {
        return Err(
            Error::corrupt(format!("cache meta refill size {refill} is invalid")).at_offset(12),
        );
    }
    let size = le64(b, 16);
    if size > MAX_SIZE {
        return Err(
            Error::corrupt(format!("cache meta blob size {size} is too large")).at_offset(16),
        );
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&b[32..64]);
    Ok(MetaHeader {
        digest,
        size,
        refill,
        last_used_ms: le64(b, 24),
    })
}

/// Check word of a record.
fn record_check(unit: u64, state: u32, crcs: &[u8]) -> u32 {
    let mut head = [0u8; 12];
    head[..8].copy_from_slice(&unit.to_le_bytes());
    head[8..].copy_from_slice(&state.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&head), crcs)
}

/// Encode the record of present unit `unit` whose blocks have `crcs` (at most
/// `refill / 4096` of them; missing slots are zero).
pub fn encode_present(refill: u32, unit: u64, crcs: &[u32]) -> Vec<u8> {
    let len = record_len(refill);
    let mut r = vec![0u8; len];
    for (slot, c) in r[8..].chunks_exact_mut(4).zip(crcs) {
        slot.copy_from_slice(&c.to_le_bytes());
    }
    let check = record_check(unit, PRESENT, &r[8..]);
    r[0..4].copy_from_slice(&PRESENT.to_le_bytes());
    r[4..8].copy_from_slice(&check.to_le_bytes());
    r
}

/// Parse a whole meta file. Records missing at the end (a short file) are absent; bytes past
/// the full length make the file corrupt.
pub fn parse(bytes: &[u8]) -> Result<ParsedMeta> {
    let header = parse_header(bytes)?;
    let full = full_len(header.size, header.refill);
    if bytes.len() as u64 > full {
        return Err(Error::corrupt(format!(
            "cache meta file is {} bytes, longer than the {full} its header implies",
            bytes.len()
        ))
        .at_offset(full));
    }
    let unit = u64::from(header.refill);
    let rec_len = record_len(header.refill);
    let blocks = block_count(header.size);
    let bpu = unit / BLOCK;
    let mut present = Vec::new();
    let mut bad_records = 0;
    let records = bytes.get(HEADER_LEN..).unwrap_or_default();
    for (i, rec) in records.chunks_exact(rec_len).enumerate() {
        let i = i as u64;
        let state = le32(rec, 0);
        let crc_bytes = rec.get(8..).unwrap_or_default();
        if state == 0 {
            if rec.iter().any(|&b| b != 0) {
                bad_records += 1;
            }
            continue;
        }
        if state != PRESENT || le32(rec, 4) != record_check(i, state, crc_bytes) {
            bad_records += 1;
            continue;
        }
        let first_block = i * bpu;
        let n = blocks.saturating_sub(first_block).min(bpu) as usize;
        let crcs: Vec<u32> = crc_bytes
            .chunks_exact(4)
            .take(n)
            .map(|c| le32(c, 0))
            .collect();
        present.push((i, crcs));
    }
    Ok(ParsedMeta {
        header,
        present,
        bad_records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> MetaHeader {
        MetaHeader {
            digest: [7; 32],
            size: 3 * 8192 + 100,
            refill: 8192,
            last_used_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn round_trip_and_record_checks() {
        let h = header();
        let mut file = encode_header(&h).to_vec();
        file.extend(encode_present(h.refill, 0, &[1, 2]));
        file.extend(vec![0u8; record_len(h.refill)]);
        let mut bad = encode_present(h.refill, 2, &[5, 6]);
        bad[9] ^= 1;
        file.extend(bad);
        // Record 3 (the short last unit: one block) is copied from slot 0: wrong index.
        file.extend(encode_present(h.refill, 0, &[9]));
        assert_eq!(file.len() as u64, full_len(h.size, h.refill));
        let p = parse(&file).unwrap();
        assert_eq!(p.header, h);
        assert_eq!(p.present, vec![(0, vec![1, 2])]);
        assert_eq!(p.bad_records, 2);
        file.truncate(HEADER_LEN + record_len(h.refill) + 3);
        assert_eq!(parse(&file).unwrap().present.len(), 1);
        file.resize(full_len(h.size, h.refill) as usize + 1, 0);
        assert!(parse(&file).is_err());
    }

    #[test]
    fn bad_headers_are_rejected() {
        let good = encode_header(&header());
        for at in [0usize, 8, 12, 20, 40, 93] {
            let mut b = good;
            b[at] ^= 0x10;
            assert!(parse(&b).is_err(), "flip at {at}");
        }
        assert!(parse(&good[..50]).is_err());
        let mut h = header();
        h.refill = 5000;
        assert!(parse(&encode_header(&h)).is_err());
        h.refill = 4096;
        h.size = MAX_SIZE + 1;
        assert!(parse(&encode_header(&h)).is_err());
    }
}
