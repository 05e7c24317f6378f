//! Pure codecs for LSMT's on-disk structures: the 4 KiB header/trailer and 16-byte segment
//! mappings. Bytes in, values out; no I/O.

use obd_core::{Error, Result};

/// Size of the header and of the trailer region.
pub const HT_SIZE: usize = 4096;
/// `magic0`: "LSMT\0\1\2\0".
pub const MAGIC0: [u8; 8] = *b"LSMT\x00\x01\x02\x00";
/// `magic1`: the format UUID {d2637e65-4494-4c08-d2a2-c8ec4fcfae8a} in its stored byte order.
pub const MAGIC1: [u8; 16] = [
    0x65, 0x7E, 0x63, 0xD2, 0x94, 0x44, 0x08, 0x4C, 0xA2, 0xD2, 0xC8, 0xEC, 0x4F, 0xCF, 0xAE, 0x8A,
];
/// The packed struct size stored in the `size` field.
pub const HT_STRUCT_SIZE: u32 = 390;
/// Largest commit message (`user_tag`).
pub const MAX_USER_TAG: usize = 256;
/// The UUID string stored when a layer has no parent.
pub const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// Flag bit 0: 1 = header, 0 = trailer.
pub const FLAG_HEADER: u32 = 1 << 0;
/// Flag bit 1: 1 = data file, 0 = index file.
pub const FLAG_DATA: u32 = 1 << 1;
/// Flag bit 2: sealed (read-only, index embedded).
pub const FLAG_SEALED: u32 = 1 << 2;
/// Flag bit 4: sparse writable layer.
pub const FLAG_SPARSE_RW: u32 = 1 << 4;
/// Every flag bit this implementation knows.
pub const KNOWN_FLAGS: u32 = FLAG_HEADER | FLAG_DATA | FLAG_SEALED | FLAG_SPARSE_RW;

/// Whether `s` is UUID text: 36 characters, hex digits and dashes as `8-4-4-4-12`.
pub fn is_uuid_text(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// An LSMT header or trailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderTrailer {
    /// Flag bits (`FLAG_*`).
    pub flags: u32,
    /// Byte offset of the index (trailer of a sealed file; 4096 in an RW index file's header).
    pub index_offset: u64,
    /// Number of 16-byte index entries (including padding entries).
    pub index_size: u64,
    /// Size in bytes of the virtual device.
    pub virtual_size: u64,
    /// This layer's UUID as text (36 chars, or empty).
    pub uuid: String,
    /// The parent layer's UUID as text (36 chars, or empty).
    pub parent_uuid: String,
    /// Format version (1).
    pub version: u8,
    /// Format sub-version (1).
    pub sub_version: u8,
    /// Commit message, at most 256 bytes.
    pub user_tag: Vec<u8>,
}

impl Default for HeaderTrailer {
    fn default() -> Self {
        HeaderTrailer {
            flags: 0,
            index_offset: 0,
            index_size: 0,
            virtual_size: 0,
            uuid: String::new(),
            parent_uuid: String::new(),
            version: 1,
            sub_version: 1,
            user_tag: Vec::new(),
        }
    }
}

fn le_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl HeaderTrailer {
    /// Whether `buf` starts with the LSMT magic.
    pub fn has_magic(buf: &[u8]) -> bool {
        buf.len() >= 24 && buf[..8] == MAGIC0 && buf[8..24] == MAGIC1
    }

    /// Decode from the first 390 bytes of `buf`. Checks magic and struct size only; callers
    /// check the flags they expect. Errors name the field; callers add file and offset.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        if buf.len() < HT_STRUCT_SIZE as usize {
            return Err(Error::corrupt(format!(
                "LSMT header/trailer truncated: {} bytes, need {HT_STRUCT_SIZE}",
                buf.len()
            )));
        }
        if !Self::has_magic(buf) {
            return Err(Error::corrupt("not an LSMT header/trailer (bad magic)"));
        }
        let size = le_u32(buf, 24);
        if size != HT_STRUCT_SIZE {
            return Err(Error::corrupt(format!(
                "LSMT header field 'size' is {size}, expected {HT_STRUCT_SIZE}"
            )));
        }
        let tag = &buf[134..390];
        let tag_len = tag.iter().position(|&c| c == 0).unwrap_or(tag.len());
        Ok(HeaderTrailer {
            flags: le_u32(buf, 28),
            index_offset: le_u64(buf, 32),
            index_size: le_u64(buf, 40),
            virtual_size: le_u64(buf, 48),
            uuid: c_string(&buf[56..93]),
            parent_uuid: c_string(&buf[93..130]),
            version: buf[132],
            sub_version: buf[133],
            user_tag: tag[..tag_len].to_vec(),
        })
    }

    /// Encode into a full 4096-byte region (zero beyond the struct).
    pub fn encode(&self) -> Result<[u8; HT_SIZE]> {
        if self.user_tag.len() > MAX_USER_TAG {
            return Err(Error::invalid_input(format!(
                "commit message is {} bytes; LSMT allows at most {MAX_USER_TAG}",
                self.user_tag.len()
            )));
        }
        for (name, u) in [("uuid", &self.uuid), ("parent uuid", &self.parent_uuid)] {
            if u.len() > 36 {
                return Err(Error::invalid_input(format!(
                    "{name} '{u}' is longer than 36 chars"
                )));
            }
        }
        let mut b = [0u8; HT_SIZE];
        b[..8].copy_from_slice(&MAGIC0);
        b[8..24].copy_from_slice(&MAGIC1);
        b[24..28].copy_from_slice(&HT_STRUCT_SIZE.to_le_bytes());
        b[28..32].copy_from_slice(&self.flags.to_le_bytes());
        b[32..40].copy_from_slice(&self.index_offset.to_le_bytes());
        b[40..48].copy_from_slice(&self.index_size.to_le_bytes());
        b[48..56].copy_from_slice(&self.virtual_size.to_le_bytes());
        b[56..56 + self.uuid.len()].copy_from_slice(self.uuid.as_bytes());
        b[93..93 + self.parent_uuid.len()].copy_from_slice(self.parent_uuid.as_bytes());
        b[132] = self.version;
        b[133] = self.sub_version;
        b[134..134 + self.user_tag.len()].copy_from_slice(&self.user_tag);
        Ok(b)
    }

    /// Flag helpers.
    pub fn is_header(&self) -> bool {
        self.flags & FLAG_HEADER != 0
    }
    /// True for a trailer.
    pub fn is_trailer(&self) -> bool {
        !self.is_header()
    }
    /// True for a data file (false: index file).
    pub fn is_data_file(&self) -> bool {
        self.flags & FLAG_DATA != 0
    }
    /// True for a sealed file.
    pub fn is_sealed(&self) -> bool {
        self.flags & FLAG_SEALED != 0
    }
    /// True for a sparse RW data file.
    pub fn is_sparse_rw(&self) -> bool {
        self.flags & FLAG_SPARSE_RW != 0
    }
}

/// Size of one on-disk segment mapping.
pub const SEGMENT_SIZE: usize = 16;
/// Largest segment length in sectors (14 bits).
pub const MAX_SEGMENT_SECTORS: u32 = (1 << 14) - 1;
/// Largest LBA in sectors (50 bits); also the `offset` of padding entries.
pub const INVALID_OFFSET: u64 = (1 << 50) - 1;
/// Largest `moffset` in sectors (55 bits).
pub const MAX_MOFFSET: u64 = (1 << 55) - 1;

/// One mapping: `length` sectors of the device at `offset` are stored at `moffset` of the
/// layer file `tag` (or read as zeros when `zeroed`). All units are 512-byte sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Segment {
    /// Device LBA in sectors.
    pub offset: u64,
    /// Length in sectors (1..=16383 on disk; longer in memory only after merging is avoided).
    pub length: u32,
    /// Sector offset inside the layer file.
    pub moffset: u64,
    /// The range reads as zeros (discard); no data is stored.
    pub zeroed: bool,
    /// Layer number in a stack (0 = lowest); 0 on disk except in TurboOCI warp files.
    pub tag: u8,
}

impl Segment {
    /// One past the last sector.
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.length)
    }

    /// Whether this is a padding entry (`offset == INVALID_OFFSET`).
    pub fn is_padding(&self) -> bool {
        self.offset == INVALID_OFFSET
    }

    /// The padding entry used to fill index blocks.
    pub const PADDING: Segment = Segment {
        offset: INVALID_OFFSET,
        length: 0,
        moffset: 0,
        zeroed: false,
        tag: 0,
    };

    /// Decode 16 bytes.
    pub fn decode(b: &[u8; SEGMENT_SIZE]) -> Segment {
        let lo = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let hi = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        Segment {
            offset: lo & INVALID_OFFSET,
            length: (lo >> 50) as u32,
            moffset: hi & MAX_MOFFSET,
            zeroed: (hi >> 55) & 1 != 0,
            tag: (hi >> 56) as u8,
        }
    }

    /// Encode to 16 bytes. Fields wider than their bit widths are truncated, so callers
    /// validate first ([`Segment::validate_for_disk`]).
    pub fn encode(&self) -> [u8; SEGMENT_SIZE] {
        let lo = (self.offset & INVALID_OFFSET) | (u64::from(self.length & 0x3FFF) << 50);
        let hi = (self.moffset & MAX_MOFFSET)
            | (u64::from(self.zeroed) << 55)
            | (u64::from(self.tag) << 56);
        let mut b = [0u8; SEGMENT_SIZE];
        b[..8].copy_from_slice(&lo.to_le_bytes());
        b[8..].copy_from_slice(&hi.to_le_bytes());
        b
    }

    /// Check that the fields fit their on-disk bit widths.
    pub fn validate_for_disk(&self) -> Result<()> {
        if self.offset >= INVALID_OFFSET
            || self.length == 0
            || self.length > MAX_SEGMENT_SECTORS
            || self.moffset > MAX_MOFFSET
        {
            return Err(Error::invalid_input(format!(
                "segment {self:?} does not fit on disk"
            )));
        }
        Ok(())
    }
}

/// Decode a run of 16-byte entries. Trailing bytes that do not form a whole entry are an error.
pub fn decode_segments(buf: &[u8]) -> Result<Vec<Segment>> {
    if !buf.len().is_multiple_of(SEGMENT_SIZE) {
        return Err(Error::corrupt(format!(
            "index area of {} bytes is not a multiple of {SEGMENT_SIZE}",
            buf.len()
        )));
    }
    Ok(buf
        .chunks_exact(SEGMENT_SIZE)
        .map(|c| {
            let mut a = [0u8; SEGMENT_SIZE];
            a.copy_from_slice(c);
            Segment::decode(&a)
        })
        .collect())
}

/// Encode entries back to back.
pub fn encode_segments(segs: &[Segment]) -> Vec<u8> {
    let mut out = Vec::with_capacity(segs.len() * SEGMENT_SIZE);
    for s in segs {
        out.extend_from_slice(&s.encode());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_roundtrip_and_bit_layout() {
        // Entry 5 of the fixture b_commit/layers/l1.lsmt: the discard "4224 32 288 1 0".
        let s = Segment::decode(&{
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&0x0080_0000_0000_1080u64.to_le_bytes());
            b[8..].copy_from_slice(&0x0080_0000_0000_0120u64.to_le_bytes());
            b
        });
        assert_eq!(
            s,
            Segment {
                offset: 4224,
                length: 32,
                moffset: 288,
                zeroed: true,
                tag: 0
            }
        );
        assert_eq!(Segment::decode(&s.encode()), s);
        let p = Segment::PADDING;
        assert_eq!(p.encode()[..8], 0x0003_FFFF_FFFF_FFFFu64.to_le_bytes());
    }

    #[test]
    fn header_roundtrip() {
        let h = HeaderTrailer {
            flags: FLAG_DATA | FLAG_SEALED,
            index_offset: 337_920,
            index_size: 256,
            virtual_size: 64 << 20,
            uuid: "11111111-1111-4111-8111-111111111111".into(),
            parent_uuid: NIL_UUID.into(),
            user_tag: b"hello".to_vec(),
            ..Default::default()
        };
        let b = h.encode().unwrap();
        assert_eq!(HeaderTrailer::decode(&b).unwrap(), h);
        assert!(HeaderTrailer::decode(&b[..100]).is_err());
        let mut bad = b;
        bad[3] ^= 1;
        assert!(HeaderTrailer::decode(&bad).is_err());
    }
}
