//! Field offsets of a 512-byte tar header block and the codecs for its numeric fields.
//!
//! Everything here is pure: slices in, values out. Callers add file offsets to errors.

use std::ops::Range;

/// Size of a tar block: headers, payload padding and the end-of-archive marker.
pub const BLOCK: usize = 512;

pub(crate) const NAME: Range<usize> = 0..100;
pub(crate) const MODE: Range<usize> = 100..108;
pub(crate) const UID: Range<usize> = 108..116;
pub(crate) const GID: Range<usize> = 116..124;
pub(crate) const SIZE: Range<usize> = 124..136;
pub(crate) const MTIME: Range<usize> = 136..148;
pub(crate) const CHKSUM: Range<usize> = 148..156;
pub(crate) const TYPEFLAG: usize = 156;
pub(crate) const MAGIC: Range<usize> = 257..263;
pub(crate) const VERSION: Range<usize> = 263..265;
pub(crate) const UNAME: Range<usize> = 265..297;
pub(crate) const GNAME: Range<usize> = 297..329;
pub(crate) const PREFIX: Range<usize> = 345..500;

/// POSIX ustar magic and version (what overlaybd writes and requires).
pub(crate) const USTAR_MAGIC: &[u8; 6] = b"ustar\0";
pub(crate) const USTAR_VERSION: &[u8; 2] = b"00";
/// GNU tar's pre-POSIX magic and version (`tar --format=gnu`, GNU tar's default).
pub(crate) const GNU_MAGIC: &[u8; 6] = b"ustar ";
pub(crate) const GNU_VERSION: &[u8; 2] = b" \0";

/// Largest value an 11-digit octal size or mtime field can hold.
pub const MAX_OCTAL_11: u64 = 0o777_7777_7777;
/// Largest value a 6-digit octal mode field (as overlaybd formats it) can hold.
pub const MAX_OCTAL_6: u64 = 0o77_7777;

/// The flavour of tar header found by its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Magic {
    /// POSIX ustar (`ustar\0` + `00`).
    Ustar,
    /// GNU (`ustar ` + ` \0`).
    Gnu,
}

/// Which tar magic, if any, `block` carries.
pub(crate) fn magic(block: &[u8; BLOCK]) -> Option<Magic> {
    let (m, v) = (&block[MAGIC], &block[VERSION]);
    if m == USTAR_MAGIC && v == USTAR_VERSION {
        Some(Magic::Ustar)
    } else if m == GNU_MAGIC && v == GNU_VERSION {
        Some(Magic::Gnu)
    } else {
        None
    }
}

/// The checksum of `block` as tar defines it: the sum of all bytes with the checksum field
/// counted as eight spaces. Returns the unsigned sum and the signed-char sum some old tars
/// wrote; both are accepted on read.
pub(crate) fn checksums(block: &[u8; BLOCK]) -> (u64, i64) {
    let mut unsigned = 0u64;
    let mut signed = 0i64;
    for (i, &b) in block.iter().enumerate() {
        let b = if CHKSUM.contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    (unsigned, signed)
}

/// Parse a numeric header field.
///
/// Accepts what real tars write: octal digits padded with leading spaces (overlaybd, old tars)
/// or zeros (GNU tar), terminated by a space or NUL; an all-NUL or all-space field is 0; GNU
/// base-256 (high bit of the first byte set) for large positive values. Anything else is an
/// error, returned as a short description.
pub(crate) fn parse_number(field: &[u8]) -> Result<u64, String> {
    let Some((&first, rest)) = field.split_first() else {
        return Ok(0);
    };
    if first & 0x80 != 0 {
        // GNU base-256: big-endian two's complement with the top bit as marker.
        if first & 0x40 != 0 {
            return Err("negative base-256 number".into());
        }
        let mut v = u64::from(first & 0x3f);
        for &b in rest {
            v = v
                .checked_mul(256)
                .map(|v| v | u64::from(b))
                .ok_or_else(|| "base-256 number overflows 64 bits".to_string())?;
        }
        return Ok(v);
    }
    let digits_start = field.iter().position(|&b| b != b' ').unwrap_or(field.len());
    let body = &field[digits_start..];
    let digits_len = body
        .iter()
        .position(|b| !(b'0'..=b'7').contains(b))
        .unwrap_or(body.len());
    let (digits, tail) = body.split_at(digits_len);
    if !tail.iter().all(|&b| b == b' ' || b == 0) {
        return Err(format!(
            "invalid octal number {:?}",
            String::from_utf8_lossy(field)
        ));
    }
    let mut v = 0u64;
    for &d in digits {
        v = v
            .checked_mul(8)
            .map(|v| v + u64::from(d - b'0'))
            .ok_or_else(|| "octal number overflows 64 bits".to_string())?;
    }
    Ok(v)
}

/// Write `value` into `field` as overlaybd's `int_to_oct` does: octal right-aligned in
/// `len - 2` columns padded with spaces, then a space, then a NUL. `value` must fit.
pub(crate) fn put_octal_space_nul(field: &mut [u8], value: u64) {
    let width = field.len().saturating_sub(2);
    let text = format!("{value:>width$o} ");
    copy_str(field, text.as_bytes());
}

/// Write `value` into `field` as overlaybd's `int_to_oct_nonull` does: octal right-aligned in
/// `len - 1` columns padded with spaces, then a space (no NUL). `value` must fit.
pub(crate) fn put_octal_space(field: &mut [u8], value: u64) {
    let width = field.len().saturating_sub(1);
    let text = format!("{value:>width$o} ");
    copy_str(field, text.as_bytes());
}

/// Copy `text` into the start of `field`, truncating to the field; the rest is left as is.
pub(crate) fn copy_str(field: &mut [u8], text: &[u8]) {
    let n = text.len().min(field.len());
    field[..n].copy_from_slice(&text[..n]);
}

/// The text of a NUL-padded string field (up to the first NUL).
pub(crate) fn str_field(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// Number of bytes `len` occupies once padded to whole blocks.
pub fn padded(len: u64) -> Option<u64> {
    len.checked_add(BLOCK as u64 - 1)
        .map(|v| v / BLOCK as u64 * BLOCK as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_number_styles_real_tars_write() {
        assert_eq!(parse_number(b"0000644\0"), Ok(0o644));
        assert_eq!(parse_number(b"  5071 \0"), Ok(0o5071));
        assert_eq!(parse_number(b"          0 "), Ok(0));
        assert_eq!(parse_number(b"00000001750\0"), Ok(1000));
        assert_eq!(parse_number(&[0; 8]), Ok(0));
        assert_eq!(parse_number(b"        "), Ok(0));
        let mut b256 = [0u8; 12];
        b256[0] = 0x80;
        b256[4..].copy_from_slice(&(12_345_678_901u64).to_be_bytes());
        assert_eq!(parse_number(&b256), Ok(12_345_678_901));
        assert!(parse_number(b"12x4    ").is_err());
        assert!(parse_number(b"0012 3\0\0").is_err());
        assert!(parse_number(&[0xff; 12]).is_err());
        let mut big = [0xffu8; 12];
        big[0] = 0x80;
        big[1] = 0x01;
        assert!(parse_number(&big).is_err());
    }

    #[test]
    fn formats_like_overlaybd() {
        let mut f = [0u8; 8];
        put_octal_space_nul(&mut f, 0o100644);
        assert_eq!(&f, b"100644 \0");
        put_octal_space_nul(&mut f, 0);
        assert_eq!(&f, b"     0 \0");
        let mut s = [0u8; 12];
        put_octal_space(&mut s, 0);
        assert_eq!(&s, b"          0 ");
        put_octal_space(&mut s, 0o17);
        assert_eq!(&s, b"         17 ");
    }

    #[test]
    fn padding() {
        assert_eq!(padded(0), Some(0));
        assert_eq!(padded(1), Some(512));
        assert_eq!(padded(512), Some(512));
        assert_eq!(padded(513), Some(1024));
        assert_eq!(padded(u64::MAX), None);
    }
}
