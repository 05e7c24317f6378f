//! Pure codecs for the ZFile header/trailer and the block index (jump table).
//!
//! ```text
//!   0        512      512+dict
//!   | header | dict  | blk0 [crc0] | blk1 [crc1] | ... | index: u32 x N | trailer (512) |
//! ```
//!
//! The header and the trailer share one 96-byte structure padded with zeros to 512 bytes.
//! Nothing here does I/O: bytes in, values out.

use obd_core::checksum::crc32c_raw;
use obd_core::{Error, Result};

/// Size of the header and of the trailer.
pub const HEADER_SIZE: usize = 512;
/// Size of the meaningful part of the header structure (the `size` field's value).
pub const HEADER_STRUCT_SIZE: u32 = 96;
/// First magic: `"ZFile\0\1\0"`.
pub const MAGIC0: [u8; 8] = *b"ZFile\0\x01\0";
/// Second magic: the bytes of the UUID upstream stores, `"tuji.yyf@Alibaba"`.
pub const MAGIC1: [u8; 16] = *b"tuji.yyf@Alibaba";
/// Seed of the per-block raw CRC32C.
pub const BLOCK_CRC_SEED: u32 = 100_007;
/// Largest `index_size` a reader accepts (upstream's limit).
pub const MAX_INDEX_SIZE: u64 = 1_000_000_000;
/// The largest block size upstream reads (`MAX_READ_SIZE`), which is also the most
/// compressed bytes (block + CRC) its reader can fetch for one block.
pub const UPSTREAM_MAX_READ_SIZE: u64 = 65536;

/// Flag bit 0: this is a header (clear: a trailer).
pub const FLAG_HEADER: u64 = 1 << 0;
/// Flag bit 1: data file (clear: index file; ZFiles are always data files).
pub const FLAG_DATA: u64 = 1 << 1;
/// Flag bit 2: sealed (set in a complete trailer).
pub const FLAG_SEALED: u64 = 1 << 2;
/// Flag bit 3: the header was rewritten with the final index location.
pub const FLAG_HEADER_OVERWRITE: u64 = 1 << 3;
/// Flag bit 4: the `digest` and `index_crc` fields are valid.
pub const FLAG_DIGEST: u64 = 1 << 4;
/// Flag bit 5: the index is compressed (defined upstream, never written or read).
pub const FLAG_INDEX_COMPRESSED: u64 = 1 << 5;
/// Every flag bit this implementation knows; 2021-era files carry garbage above these.
pub const KNOWN_FLAGS: u64 = 0x3f;

const OFF_SIZE: usize = 24;
const OFF_DIGEST: usize = 28;
const OFF_FLAGS: usize = 32;
const OFF_INDEX_OFFSET: usize = 40;
const OFF_INDEX_SIZE: usize = 48;
const OFF_ORIGINAL_SIZE: usize = 56;
const OFF_INDEX_CRC: usize = 64;
const OFF_BLOCK_SIZE: usize = 72;
const OFF_ALGO: usize = 76;
const OFF_LEVEL: usize = 77;
const OFF_USE_DICT: usize = 78;
const OFF_DICT_SIZE: usize = 84;
const OFF_VERIFY: usize = 88;

/// Compression algorithm of a ZFile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// LZ4 block format (code 1), upstream's default.
    #[default]
    Lz4,
    /// Zstandard frames, level 3 (code 2).
    Zstd,
}

impl Algorithm {
    /// The on-disk code.
    pub fn code(self) -> u8 {
        match self {
            Algorithm::Lz4 => 1,
            Algorithm::Zstd => 2,
        }
    }

    /// Decode an on-disk code. 0 (MINI_LZO, never implemented upstream) and unknown codes
    /// are [`obd_core::ErrorKind::Unsupported`].
    pub fn from_code(code: u8) -> Result<Self> {
        match code {
            1 => Ok(Algorithm::Lz4),
            2 => Ok(Algorithm::Zstd),
            0 => Err(Error::unsupported(
                "compression algorithm 0 (MINI_LZO) is not supported",
            )),
            n => Err(Error::unsupported(format!(
                "unknown compression algorithm {n}"
            ))),
        }
    }

    /// The name used on command lines (`lz4`, `zstd`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Lz4 => "lz4",
            Algorithm::Zstd => "zstd",
        }
    }
}

impl std::str::FromStr for Algorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "lz4" => Ok(Algorithm::Lz4),
            "zstd" => Ok(Algorithm::Zstd),
            _ => Err(Error::invalid_input(format!(
                "unknown algorithm {s:?} (lz4 or zstd)"
            ))),
        }
    }
}

/// All fields of the 512-byte ZFile header or trailer, as stored.
///
/// `flags` is kept raw (old files have garbage above bit 5); the accessors mask it.
/// Bytes outside the fields (reserved, padding) are ignored by [`decode`](Self::decode) and
/// written as zeros by [`encode`](Self::encode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZFileHeader {
    /// Size of the header structure; 96.
    pub size: u32,
    /// Raw CRC32C (seed 0) of all 512 bytes with this field zeroed; valid if [`FLAG_DIGEST`].
    pub digest: u32,
    /// Raw flag word.
    pub flags: u64,
    /// Byte offset of the u32 index.
    pub index_offset: u64,
    /// Number of index entries (blocks).
    pub index_size: u64,
    /// Size of the uncompressed content.
    pub original_file_size: u64,
    /// Raw CRC32C (seed 0) of the index bytes; valid if [`FLAG_DIGEST`].
    pub index_crc: u32,
    /// Uncompressed block size.
    pub block_size: u32,
    /// Raw algorithm code (see [`Algorithm::from_code`]).
    pub algo: u8,
    /// Compression level field (upstream writes 0).
    pub level: u8,
    /// Dictionary flag (never used upstream).
    pub use_dict: u8,
    /// Dictionary size; data starts at `512 + dict_size`.
    pub dict_size: u32,
    /// 1 when each block is followed by its 4-byte CRC.
    pub verify: u8,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Whether `prefix` (at least the first 24 bytes of a file) starts with the ZFile magics.
pub fn is_zfile(prefix: &[u8]) -> bool {
    prefix.len() >= 24 && prefix[..8] == MAGIC0 && prefix[8..24] == MAGIC1
}

/// Raw CRC32C (seed 0) of a 512-byte header/trailer with its digest field taken as zero.
pub fn header_digest(bytes: &[u8; HEADER_SIZE]) -> u32 {
    let mut copy = *bytes;
    copy[OFF_DIGEST..OFF_DIGEST + 4].fill(0);
    crc32c_raw(0, &copy)
}

/// Raw CRC32C (seed 0) of the index entries as stored (u32 little endian).
pub fn index_crc(entries: &[u32]) -> u32 {
    let mut crc = 0;
    let mut chunk = [0u8; 4096];
    for part in entries.chunks(chunk.len() / 4) {
        for (dst, e) in chunk.chunks_exact_mut(4).zip(part) {
            dst.copy_from_slice(&e.to_le_bytes());
        }
        crc = crc32c_raw(crc, &chunk[..part.len() * 4]);
    }
    crc
}

/// Per-block CRC: raw CRC32C with seed [`BLOCK_CRC_SEED`] of the compressed bytes.
pub fn block_crc(compressed: &[u8]) -> u32 {
    crc32c_raw(BLOCK_CRC_SEED, compressed)
}

impl ZFileHeader {
    /// Parse 512 bytes (or more; the rest is ignored). Checks the magics only: flag,
    /// digest and field validation is the reader's job, since what is required differs
    /// between header and trailer.
    pub fn decode(bytes: &[u8]) -> Result<ZFileHeader> {
        if bytes.len() < HEADER_SIZE {
            return Err(Error::corrupt(format!(
                "ZFile header/trailer needs {HEADER_SIZE} bytes, got {}",
                bytes.len()
            )));
        }
        if !is_zfile(bytes) {
            return Err(Error::corrupt("bad ZFile magic"));
        }
        Ok(ZFileHeader {
            size: u32_at(bytes, OFF_SIZE),
            digest: u32_at(bytes, OFF_DIGEST),
            flags: u64_at(bytes, OFF_FLAGS),
            index_offset: u64_at(bytes, OFF_INDEX_OFFSET),
            index_size: u64_at(bytes, OFF_INDEX_SIZE),
            original_file_size: u64_at(bytes, OFF_ORIGINAL_SIZE),
            index_crc: u32_at(bytes, OFF_INDEX_CRC),
            block_size: u32_at(bytes, OFF_BLOCK_SIZE),
            algo: bytes[OFF_ALGO],
            level: bytes[OFF_LEVEL],
            use_dict: bytes[OFF_USE_DICT],
            dict_size: u32_at(bytes, OFF_DICT_SIZE),
            verify: bytes[OFF_VERIFY],
        })
    }

    /// Serialize to 512 bytes. When [`FLAG_DIGEST`] is set the digest is computed
    /// (the stored `digest` field is ignored); otherwise `digest` is written as is.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[..8].copy_from_slice(&MAGIC0);
        b[8..24].copy_from_slice(&MAGIC1);
        b[OFF_SIZE..OFF_SIZE + 4].copy_from_slice(&self.size.to_le_bytes());
        b[OFF_FLAGS..OFF_FLAGS + 8].copy_from_slice(&self.flags.to_le_bytes());
        b[OFF_INDEX_OFFSET..OFF_INDEX_OFFSET + 8].copy_from_slice(&self.index_offset.to_le_bytes());
        b[OFF_INDEX_SIZE..OFF_INDEX_SIZE + 8].copy_from_slice(&self.index_size.to_le_bytes());
        b[OFF_ORIGINAL_SIZE..OFF_ORIGINAL_SIZE + 8]
            .copy_from_slice(&self.original_file_size.to_le_bytes());
        b[OFF_INDEX_CRC..OFF_INDEX_CRC + 4].copy_from_slice(&self.index_crc.to_le_bytes());
        b[OFF_BLOCK_SIZE..OFF_BLOCK_SIZE + 4].copy_from_slice(&self.block_size.to_le_bytes());
        b[OFF_ALGO] = self.algo;
        b[OFF_LEVEL] = self.level;
        b[OFF_USE_DICT] = self.use_dict;
        b[OFF_DICT_SIZE..OFF_DICT_SIZE + 4].copy_from_slice(&self.dict_size.to_le_bytes());
        b[OFF_VERIFY] = self.verify;
        let digest = if self.has_digest() {
            header_digest(&b)
        } else {
            self.digest
        };
        b[OFF_DIGEST..OFF_DIGEST + 4].copy_from_slice(&digest.to_le_bytes());
        b
    }

    /// A fresh structure for `block_size`/`algo`/`verify` with all other fields zero.
    pub fn new(block_size: u32, algo: Algorithm, verify: bool) -> Self {
        ZFileHeader {
            size: HEADER_STRUCT_SIZE,
            block_size,
            algo: algo.code(),
            verify: u8::from(verify),
            ..Default::default()
        }
    }

    /// The flag bits this implementation knows (bits 0..=5); the rest is masked off.
    pub fn known_flags(&self) -> u64 {
        self.flags & KNOWN_FLAGS
    }
    /// Bit 0: a header rather than a trailer.
    pub fn is_header(&self) -> bool {
        self.flags & FLAG_HEADER != 0
    }
    /// Bit 1: a data file.
    pub fn is_data_file(&self) -> bool {
        self.flags & FLAG_DATA != 0
    }
    /// Bit 2: sealed.
    pub fn is_sealed(&self) -> bool {
        self.flags & FLAG_SEALED != 0
    }
    /// Bit 3: the header carries the final index information.
    pub fn is_header_overwrite(&self) -> bool {
        self.flags & FLAG_HEADER_OVERWRITE != 0
    }
    /// Bit 4: `digest` and `index_crc` are valid.
    pub fn has_digest(&self) -> bool {
        self.flags & FLAG_DIGEST != 0
    }
    /// Whether blocks carry CRCs.
    pub fn has_block_crc(&self) -> bool {
        self.verify != 0
    }
    /// Byte offset where block 0 starts.
    pub fn data_offset(&self) -> u64 {
        HEADER_SIZE as u64 + u64::from(self.dict_size)
    }
    /// Number of blocks needed for `original_file_size`, or `None` if `block_size` is 0.
    pub fn expected_blocks(&self) -> Option<u64> {
        if self.block_size == 0 {
            return None;
        }
        Some(self.original_file_size.div_ceil(u64::from(self.block_size)))
    }
}

/// Whether `block_size` is one upstream writes and reads: 4, 8, 16, 32 or 64 KiB.
pub fn valid_block_size(block_size: u32) -> bool {
    block_size.is_power_of_two() && (4096..=65536).contains(&block_size)
}

/// The largest index entry accepted for `block_size`: generous enough for any LZ4 or zstd
/// encoding of a block plus its CRC, small enough to reject nonsense early.
pub fn max_entry(block_size: u32) -> u32 {
    block_size.saturating_mul(2).saturating_add(4096)
}

/// The blocks of a ZFile index that upstream's reader cannot read: it fetches at most
/// [`UPSTREAM_MAX_READ_SIZE`] bytes per block, and its jump table keeps u16 partial sums
/// inside each group of `65536 / block_size` blocks (a sum over 65535 wraps silently).
/// Returns the indices of the offending blocks; empty for a file upstream reads.
pub fn upstream_unreadable_blocks(entries: &[u32], block_size: u32) -> Vec<u64> {
    let group = (65536 / block_size.max(1)).max(1) as usize;
    let mut bad = Vec::new();
    let mut partial: u64 = 0;
    for (i, &e) in entries.iter().enumerate() {
        let mut ok = u64::from(e) <= UPSTREAM_MAX_READ_SIZE;
        // The delta stored for block i+1 is the sum of the group's entries before it; the
        // end of a group's last block is stored as the next group's u64 base instead.
        if (i + 1) % group != 0 {
            partial += u64::from(e);
            ok &= partial <= u64::from(u16::MAX);
        } else {
            partial = 0;
        }
        if !ok {
            bad.push(i as u64);
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_and_digest() {
        let mut h = ZFileHeader::new(4096, Algorithm::Zstd, true);
        h.flags = FLAG_DATA | FLAG_SEALED | FLAG_DIGEST;
        h.index_offset = 12345;
        h.index_size = 7;
        h.original_file_size = 7 * 4096 - 3;
        h.index_crc = 0xdead_beef;
        let b = h.encode();
        let d = ZFileHeader::decode(&b).unwrap();
        assert_eq!(d.digest, header_digest(&b));
        assert_eq!(ZFileHeader { digest: 0, ..d }, h);
        assert_eq!(d.encode(), b);
        assert!(is_zfile(&b));
        assert!(!is_zfile(&b[..20]));
    }

    #[test]
    fn decode_rejects_short_and_bad_magic() {
        assert!(ZFileHeader::decode(&[0u8; 100]).is_err());
        let mut b = ZFileHeader::new(4096, Algorithm::Lz4, false).encode();
        b[3] ^= 1;
        assert!(ZFileHeader::decode(&b).is_err());
    }

    #[test]
    fn algorithm_codes() {
        assert_eq!(Algorithm::from_code(1).unwrap(), Algorithm::Lz4);
        assert_eq!(Algorithm::from_code(2).unwrap(), Algorithm::Zstd);
        let e = Algorithm::from_code(0).unwrap_err();
        assert_eq!(e.kind(), obd_core::ErrorKind::Unsupported);
        assert!(Algorithm::from_code(9).is_err());
        assert_eq!("ZSTD".parse::<Algorithm>().unwrap(), Algorithm::Zstd);
    }

    #[test]
    fn block_sizes() {
        for bs in [4096, 8192, 16384, 32768, 65536] {
            assert!(valid_block_size(bs));
        }
        for bs in [0, 512, 2048, 4095, 12288, 131072] {
            assert!(!valid_block_size(bs));
        }
    }

    #[test]
    fn upstream_readability() {
        // 4 KiB blocks: groups of 16; the first 15 entries of a group must sum to <= 65535.
        assert!(upstream_unreadable_blocks(&[4132; 64], 4096).is_empty());
        assert_eq!(
            upstream_unreadable_blocks(&[5000; 32], 4096),
            [13, 14, 29, 30]
        );
        // The 16th entry of a group is not part of any delta.
        let mut v = vec![4369u32; 15];
        v.push(60000);
        assert!(upstream_unreadable_blocks(&v, 4096).is_empty());
        // 64 KiB blocks: no deltas, but a block over 64 KiB cannot be fetched.
        assert!(upstream_unreadable_blocks(&[65536, 65536], 65536).is_empty());
        assert_eq!(upstream_unreadable_blocks(&[65536, 65813, 9], 65536), [1]);
    }
}
