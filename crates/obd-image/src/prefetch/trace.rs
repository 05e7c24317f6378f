//! The binary trace file: a pure codec, bit-compatible with upstream's `prefetch.cpp`.
//!
//! Both structs are x86-64 / aarch64 C structs with natural padding, little-endian:
//!
//! ```text
//!   header (24 B)  0: u32 magic = 0xC2EF1820   4: u32 pad   8: u64 data_size
//!                 16: u32 checksum            20: u32 pad
//!   record (24 B)  0: u8 op ('R' | 'W')        1: u8 pad[3] 4: u32 layer_index
//!                  8: u64 count               16: i64 offset
//! ```
//!
//! `data_size` is 24 × the number of records, and the file is exactly `24 + data_size` bytes.
//! `checksum` is the raw CRC32C (seed 0, no inversion) chained over every record's 24 bytes
//! **as stored**. Upstream never clears the padding of the records it writes, so its files may
//! hold arbitrary padding bytes: [`decode`] checksums them as they are and ignores them;
//! [`encode`] writes zeros.

use obd_core::checksum::crc32c_raw;
use obd_core::{Error, Result};

/// Magic number of a trace file ("CRC32 of `Container Image Trace Format`").
pub const TRACE_MAGIC: u32 = 0xC2EF_1820;
/// Size of the header in bytes.
pub const HEADER_SIZE: usize = 24;
/// Size of one record in bytes.
pub const RECORD_SIZE: usize = 24;
/// Largest `count` upstream can replay (its replay buffer is 1 MiB), and so the largest a
/// record we write carries.
pub const MAX_RECORD_COUNT: u64 = 1 << 20;

/// What a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TraceOp {
    /// A read (`'R'`); the only kind that is recorded and replayed.
    Read,
    /// A write (`'W'`); accepted in files, never replayed.
    Write,
}

impl TraceOp {
    /// The byte stored in a record.
    pub fn to_byte(self) -> u8 {
        match self {
            TraceOp::Read => b'R',
            TraceOp::Write => b'W',
        }
    }

    /// The op for a stored byte, if it is one.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'R' => Some(TraceOp::Read),
            b'W' => Some(TraceOp::Write),
            _ => None,
        }
    }
}

/// One I/O of one layer: `count` bytes at `offset` of layer `layer_index` (offsets are in
/// the layer's uncompressed LSMT file space).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceRecord {
    /// Read or write.
    pub op: TraceOp,
    /// Index of the layer in the device's lowers, bottom first.
    pub layer_index: u32,
    /// Length in bytes.
    pub count: u64,
    /// Byte offset in the layer. Never negative in a decoded trace.
    pub offset: i64,
}

impl TraceRecord {
    /// A read record.
    pub fn read(layer_index: u32, offset: i64, count: u64) -> Self {
        TraceRecord {
            op: TraceOp::Read,
            layer_index,
            count,
            offset,
        }
    }

    /// The 24 stored bytes, padding zeroed.
    pub fn to_bytes(&self) -> [u8; RECORD_SIZE] {
        let mut b = [0u8; RECORD_SIZE];
        b[0] = self.op.to_byte();
        b[4..8].copy_from_slice(&self.layer_index.to_le_bytes());
        b[8..16].copy_from_slice(&self.count.to_le_bytes());
        b[16..24].copy_from_slice(&self.offset.to_le_bytes());
        b
    }

    /// Parse the 24 bytes of a record stored at file offset `at` (used in errors).
    pub fn from_bytes(b: &[u8; RECORD_SIZE], at: u64) -> Result<Self> {
        let op = TraceOp::from_byte(b[0]).ok_or_else(|| {
            Error::corrupt(format!(
                "trace record has unknown op byte {:#04x} (expected 'R' or 'W')",
                b[0]
            ))
            .at_offset(at)
        })?;
        let layer_index = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let count = u64::from_le_bytes(le8(b, 8));
        let offset = i64::from_le_bytes(le8(b, 16));
        if offset < 0 {
            return Err(
                Error::corrupt(format!("trace record has a negative offset {offset}"))
                    .at_offset(at),
            );
        }
        if i64::try_from(count)
            .ok()
            .and_then(|c| offset.checked_add(c))
            .is_none()
        {
            return Err(Error::corrupt(format!(
                "trace record of {count} bytes at offset {offset} ends beyond 2^63"
            ))
            .at_offset(at));
        }
        Ok(TraceRecord {
            op,
            layer_index,
            count,
            offset,
        })
    }
}

fn le8(b: &[u8; RECORD_SIZE], at: usize) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&b[at..at + 8]);
    out
}

/// The file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceHeader {
    /// [`TRACE_MAGIC`].
    pub magic: u32,
    /// Bytes of records after the header.
    pub data_size: u64,
    /// Raw CRC32C of the records, see the module docs.
    pub checksum: u32,
}

impl TraceHeader {
    /// The 24 stored bytes, padding zeroed.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(&self.magic.to_le_bytes());
        b[8..16].copy_from_slice(&self.data_size.to_le_bytes());
        b[16..20].copy_from_slice(&self.checksum.to_le_bytes());
        b
    }

    /// Parse the header at the start of `bytes`, checking only its magic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let Some(b) = bytes.first_chunk::<HEADER_SIZE>() else {
            return Err(Error::corrupt(format!(
                "trace file is {} bytes, shorter than its {HEADER_SIZE}-byte header",
                bytes.len()
            ))
            .at_offset(0));
        };
        let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if magic != TRACE_MAGIC {
            return Err(Error::corrupt(format!(
                "bad trace magic {magic:#010x} (expected {TRACE_MAGIC:#010x})"
            ))
            .at_offset(0));
        }
        let mut ds = [0u8; 8];
        ds.copy_from_slice(&b[8..16]);
        Ok(TraceHeader {
            magic,
            data_size: u64::from_le_bytes(ds),
            checksum: u32::from_le_bytes([b[16], b[17], b[18], b[19]]),
        })
    }
}

/// Whether `bytes` start with the trace magic (what upstream checks to tell a binary trace
/// from a file list).
pub fn has_magic(bytes: &[u8]) -> bool {
    bytes
        .first_chunk::<4>()
        .is_some_and(|m| u32::from_le_bytes(*m) == TRACE_MAGIC)
}

/// Encode `records` as a complete trace file.
pub fn encode(records: &[TraceRecord]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_SIZE];
    out.reserve(records.len().saturating_mul(RECORD_SIZE));
    let mut checksum = 0u32;
    for r in records {
        let b = r.to_bytes();
        checksum = crc32c_raw(checksum, &b);
        out.extend_from_slice(&b);
    }
    let header = TraceHeader {
        magic: TRACE_MAGIC,
        data_size: (records.len() as u64).saturating_mul(RECORD_SIZE as u64),
        checksum,
    };
    out[..HEADER_SIZE].copy_from_slice(&header.to_bytes());
    out
}

/// Decode a complete trace file. Errors are [`obd_core::ErrorKind::Corrupt`] (or `Checksum`)
/// and carry the byte offset of the problem.
pub fn decode(bytes: &[u8]) -> Result<Vec<TraceRecord>> {
    let header = TraceHeader::from_bytes(bytes)?;
    let body = &bytes[HEADER_SIZE..];
    if header.data_size != body.len() as u64 {
        return Err(Error::corrupt(format!(
            "trace header says {} bytes of records, the file has {} after the header",
            header.data_size,
            body.len()
        ))
        .at_offset(8));
    }
    if !body.len().is_multiple_of(RECORD_SIZE) {
        return Err(Error::corrupt(format!(
            "trace data size {} is not a multiple of the {RECORD_SIZE}-byte record",
            body.len()
        ))
        .at_offset(8));
    }
    let checksum = crc32c_raw(0, body);
    if checksum != header.checksum {
        return Err(Error::checksum(format!(
            "trace checksum mismatch: header has {:#010x}, the {} records give {checksum:#010x}",
            header.checksum,
            body.len() / RECORD_SIZE
        ))
        .at_offset(16));
    }
    let mut records = Vec::with_capacity(body.len() / RECORD_SIZE);
    for (i, chunk) in body.chunks_exact(RECORD_SIZE).enumerate() {
        let at = (HEADER_SIZE + i * RECORD_SIZE) as u64;
        let b: &[u8; RECORD_SIZE] = chunk
            .try_into()
            .map_err(|_| Error::corrupt("short trace record").at_offset(at))?;
        records.push(TraceRecord::from_bytes(b, at)?);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_trace_is_just_a_header() {
        let b = encode(&[]);
        assert_eq!(b.len(), HEADER_SIZE);
        assert_eq!(decode(&b).unwrap(), vec![]);
    }

    #[test]
    fn chained_checksum_equals_checksum_of_the_body() {
        let recs = [TraceRecord::read(1, 4096, 512), TraceRecord::read(0, 0, 1)];
        let b = encode(&recs);
        let chained = crc32c_raw(crc32c_raw(0, &b[24..48]), &b[48..72]);
        assert_eq!(chained, crc32c_raw(0, &b[24..]));
        assert_eq!(TraceHeader::from_bytes(&b).unwrap().checksum, chained);
    }
}
