//! Recognising a tar-wrapped file and locating its payload.

use obd_core::{Error, Result};

use super::build::{HEADER_LEN, PAX_NAME};
use super::field::{
    self, BLOCK, CHKSUM, MAX_OCTAL_11, Magic, NAME, PREFIX, SIZE, TYPEFLAG, VERSION,
};

/// The longest run of tar headers (extended headers included) that is followed before the
/// file entry. Real wrappers use 512 or 1536 bytes; longer chains are refused as unsupported.
pub const MAX_HEADERS_LEN: u64 = 1 << 20;

/// Name of upstream's placeholder entry while a wrapped file is still being written.
pub const UNFINISHED_NAME: &str = "overlaybd.new";

/// Where the payload of a tar-wrapped file lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// Byte offset of the payload in the file: just past the last header block (512 for a
    /// plain ustar header, 1536 for overlaybd's PAX + ustar header).
    pub data_offset: u64,
    /// Payload length: the PAX `size=` record when there is one, else the header's size field.
    /// `None` for upstream's unfinished-writer placeholder (`overlaybd.new`), whose payload
    /// length was never recorded.
    pub size: Option<u64>,
    /// The entry's name (PAX `path`, GNU long name, or `prefix/name`), lossily decoded.
    pub name: String,
}

/// Outcome of walking the headers found in a prefix of a file.
#[derive(Debug)]
pub(crate) enum Walk {
    /// Decided: not a tar (`None`) or the entry.
    Done(Option<TarEntry>),
    /// The header at `at` needs the prefix to extend to `end` bytes.
    Short { at: u64, end: u64 },
}

/// Decide from the first bytes of a file whether it is tar-wrapped and where its payload is.
///
/// `prefix` must start at byte 0 of the file; 4 KiB is plenty for any real wrapper (pass the
/// whole file when it is shorter). Returns:
/// - `Ok(None)`: not a tar (no `ustar` magic in the first block, or shorter than one block);
///   upstream reads such files as they are;
/// - `Ok(Some(entry))`: the payload location of the first (only) file entry;
/// - `Err`: the file claims to be a tar but its headers are corrupt (checksum, size or PAX
///   fields), end before the file entry, or describe something other than a regular file.
///   Errors carry the byte offset of the offending header or field.
///
/// Recognised: POSIX ustar headers (which overlaybd writes and upstream requires) and GNU tar
/// headers (`ustar  `), optionally preceded by PAX (`x`, `g`) and GNU long-name (`L`, `K`)
/// headers of any length up to [`MAX_HEADERS_LEN`].
///
/// Compared with upstream (`is_tar_file` + `TarFile::read_header`): upstream recognises only
/// POSIX ustar, reads a first block with a bad checksum as a plain file, and puts the payload
/// at 512, or 1536 when any PAX header is present. For every wrapper overlaybd writes, and
/// every single-file tar whose headers fit that rule, the result here is the same. Where they
/// differ this reader is stricter (a bad checksum, a non-regular entry or conflicting sizes
/// are errors rather than wrong bytes) or follows the headers (GNU tars, PAX records longer
/// than one block, long-name headers) instead of assuming a fixed offset.
pub fn detect(prefix: &[u8]) -> Result<Option<TarEntry>> {
    match walk(prefix)? {
        Walk::Done(entry) => Ok(entry),
        Walk::Short { at, end } => Err(Error::corrupt(format!(
            "tar header is truncated: it needs the file to extend to byte {end}, but it ends at \
             {}",
            prefix.len()
        ))
        .at_offset(at)),
    }
}

fn block_at(prefix: &[u8], off: u64) -> Option<&[u8; BLOCK]> {
    let start = usize::try_from(off).ok()?;
    prefix
        .get(start..start.checked_add(BLOCK)?)?
        .try_into()
        .ok()
}

/// Whether the file starts with upstream's "still being written" placeholder: a PAX block
/// without magic named `overlaybd.pax`, and an `overlaybd.new` entry with magic `xxtar`.
fn unfinished_marker(prefix: &[u8], first: &[u8; BLOCK]) -> bool {
    let entry = match block_at(prefix, 2 * BLOCK as u64) {
        Some(b) => b,
        None => return false,
    };
    first[TYPEFLAG] == b'x'
        && field::str_field(&first[NAME]) == PAX_NAME.as_bytes()
        && field::str_field(&entry[NAME]) == UNFINISHED_NAME.as_bytes()
        && entry[257..262] == *b"xxtar"
        && entry[VERSION] == *b"xx"
}

pub(crate) fn walk(prefix: &[u8]) -> Result<Walk> {
    let Some(first) = block_at(prefix, 0) else {
        return Ok(Walk::Done(None));
    };
    let Some(magic) = field::magic(first) else {
        if unfinished_marker(prefix, first) {
            return Ok(Walk::Done(Some(TarEntry {
                data_offset: HEADER_LEN,
                size: None,
                name: UNFINISHED_NAME.to_string(),
            })));
        }
        return Ok(Walk::Done(None));
    };

    let mut ext = Extended::default();
    let mut off = 0u64;
    loop {
        if off + BLOCK as u64 > MAX_HEADERS_LEN {
            return Err(Error::unsupported(format!(
                "tar headers run past the first {MAX_HEADERS_LEN} bytes of the file, the most \
                 that is examined"
            ))
            .at_offset(off));
        }
        let Some(block) = block_at(prefix, off) else {
            return Ok(Walk::Short {
                at: off,
                end: off + BLOCK as u64,
            });
        };
        if block.iter().all(|&b| b == 0) {
            return Err(
                Error::corrupt("tar archive ends before its first file entry").at_offset(off),
            );
        }
        verify_checksum(block).map_err(|e| e.at_offset(off))?;
        let size = field::parse_number(&block[SIZE]).map_err(|m| {
            Error::corrupt(format!("tar header size field: {m}")).at_offset(off + SIZE.start as u64)
        })?;
        let data_start = off + BLOCK as u64;
        match block[TYPEFLAG] {
            flag @ (b'x' | b'g' | b'L' | b'K') => {
                let end = data_start
                    .checked_add(size)
                    .and_then(field::padded)
                    .filter(|&end| end <= MAX_HEADERS_LEN)
                    .ok_or_else(|| {
                        Error::unsupported(format!(
                            "tar extended header of {size} bytes runs past the first \
                             {MAX_HEADERS_LEN} bytes of the file, the most that is examined"
                        ))
                        .at_offset(off)
                    })?;
                // `end` and `size` are below MAX_HEADERS_LEN, so they fit in usize.
                let (s, n) = (data_start as usize, size as usize);
                let Some(data) = prefix.get(s..s + n) else {
                    return Ok(Walk::Short {
                        at: off,
                        end: data_start + size,
                    });
                };
                match flag {
                    b'x' => ext.parse_pax(data, data_start)?,
                    b'L' => ext.long_name = Some(field::str_field(data).to_vec()),
                    _ => {} // global PAX records and GNU long link names do not matter here
                }
                off = end;
            }
            b'0' | 0 | b'7' => {
                return entry(block, magic, size, ext, off).map(|e| Walk::Done(Some(e)));
            }
            other => {
                return Err(Error::unsupported(format!(
                    "the first tar entry has type {:?}; only a regular file can hold a payload",
                    char::from(other)
                ))
                .at_offset(off + TYPEFLAG as u64));
            }
        }
    }
}

fn verify_checksum(block: &[u8; BLOCK]) -> Result<()> {
    let stored = field::parse_number(&block[CHKSUM])
        .map_err(|m| Error::checksum(format!("tar header checksum field: {m}")))?;
    let (unsigned, signed) = field::checksums(block);
    if stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed) {
        Ok(())
    } else {
        Err(Error::checksum(format!(
            "tar header checksum mismatch: stored {stored}, computed {unsigned}"
        )))
    }
}

/// Build the entry for the file header `block` at `off`, applying extended headers.
fn entry(
    block: &[u8; BLOCK],
    magic: Magic,
    header_size: u64,
    ext: Extended,
    off: u64,
) -> Result<TarEntry> {
    let size = match ext.size {
        // The ustar field cannot express sizes past 11 octal digits; there PAX alone counts.
        Some(pax) if header_size != 0 && header_size != pax && pax <= MAX_OCTAL_11 => {
            return Err(Error::corrupt(format!(
                "tar entry size {header_size} disagrees with its PAX size record {pax}"
            ))
            .at_offset(off + SIZE.start as u64));
        }
        Some(pax) => pax,
        None => header_size,
    };
    let data_offset = off + BLOCK as u64;
    if data_offset.checked_add(size).is_none() {
        return Err(
            Error::corrupt(format!("tar entry size {size} is impossibly large"))
                .at_offset(off + SIZE.start as u64),
        );
    }
    let name = match (ext.path, ext.long_name) {
        (Some(p), _) | (None, Some(p)) => p,
        (None, None) => {
            let name = field::str_field(&block[NAME]);
            let prefix = field::str_field(&block[PREFIX]);
            if magic == Magic::Ustar && !prefix.is_empty() {
                [prefix, b"/", name].concat()
            } else {
                name.to_vec()
            }
        }
    };
    Ok(TarEntry {
        data_offset,
        size: Some(size),
        name: String::from_utf8_lossy(&name).into_owned(),
    })
}

/// What extended headers said about the entry that follows them.
#[derive(Debug, Default)]
struct Extended {
    size: Option<u64>,
    path: Option<Vec<u8>>,
    long_name: Option<Vec<u8>>,
}

impl Extended {
    /// Parse PAX records `"<len> <key>=<value>\n"` found at file offset `base`.
    fn parse_pax(&mut self, data: &[u8], base: u64) -> Result<()> {
        let mut pos = 0usize;
        while let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) {
            if rest.iter().all(|&b| b == 0) {
                break; // NUL padding after the last record
            }
            let at = base + pos as u64;
            let bad = |what: &str| Error::corrupt(format!("PAX record: {what}")).at_offset(at);
            let space = rest
                .iter()
                .take(21)
                .position(|&b| b == b' ')
                .ok_or_else(|| bad("no length prefix"))?;
            let len = parse_decimal(&rest[..space]).ok_or_else(|| bad("invalid length"))?;
            let record = usize::try_from(len)
                .ok()
                .filter(|&len| len > space + 1)
                .and_then(|len| rest.get(..len))
                .ok_or_else(|| bad(&format!("length {len} does not fit the header")))?;
            let Some((b'\n', body)) = record[space + 1..].split_last() else {
                return Err(bad("missing newline"));
            };
            let eq = body
                .iter()
                .position(|&b| b == b'=')
                .ok_or_else(|| bad("missing '='"))?;
            let (key, value) = (&body[..eq], &body[eq + 1..]);
            match key {
                b"size" => {
                    let size = parse_decimal(value).ok_or_else(|| {
                        bad(&format!(
                            "invalid size {:?}",
                            String::from_utf8_lossy(value)
                        ))
                    })?;
                    self.size = Some(size);
                }
                b"path" => self.path = Some(value.to_vec()),
                _ => {}
            }
            pos += record.len();
        }
        Ok(())
    }
}

/// A non-empty run of ASCII digits as a u64.
fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}
