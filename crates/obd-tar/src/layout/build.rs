//! Builders for the bytes overlaybd writes around a payload (`overlaybd-commit -t`,
//! `overlaybd-zfile -t`, `overlaybd-merge -t`).

use obd_core::{Error, Result};

use super::field::{
    self, BLOCK, CHKSUM, GID, GNAME, MAGIC, MAX_OCTAL_6, MAX_OCTAL_11, MODE, MTIME, NAME, SIZE,
    TYPEFLAG, UID, UNAME, USTAR_MAGIC, USTAR_VERSION, VERSION,
};

/// Name of the PAX extended header block overlaybd writes first.
pub const PAX_NAME: &str = "overlaybd.pax";
/// Name of the single file entry overlaybd writes (the payload).
pub const ENTRY_NAME: &str = "overlaybd.commit";
/// Length of the header overlaybd writes: PAX header, PAX record block, ustar header.
pub const HEADER_LEN: u64 = 3 * BLOCK as u64;
/// The owner and group names overlaybd puts in the entry (`getpwuid(0)`/`getgrgid(0)`).
pub const OWNER_NAME: &str = "root";

/// One PAX record, `"<len> <key>=<value>\n"`, where `<len>` counts the whole record including
/// its own digits.
pub fn pax_record(key: &str, value: &str) -> String {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + body.to_string().len();
    // Adding the length's digits can carry it to one more digit (e.g. 98 -> 100).
    if len.to_string().len() + body != len {
        len = body + len.to_string().len();
    }
    format!("{len} {key}={value}\n")
}

/// Stamp the checksum of a finished header block, formatted as overlaybd does.
fn seal(block: &mut [u8; BLOCK]) {
    block[CHKSUM].fill(0);
    let (sum, _) = field::checksums(block);
    field::put_octal_space_nul(&mut block[CHKSUM], sum);
}

/// The 1536 header bytes overlaybd puts before a payload of `size` bytes:
///
/// 1. a PAX extended header block (typeflag `x`) named `overlaybd.pax` whose size field is the
///    record length; mode, uid, gid and mtime are left all-NUL, as upstream leaves them;
/// 2. the record block holding `"<n> size=<size>\n"`, NUL-padded;
/// 3. a ustar regular-file header (typeflag `0`) named `name` with size field 0 (the PAX record
///    carries the size), uid/gid 0, uname/gname `root`, the given `mode` and `mtime`.
///
/// Numbers are formatted exactly as upstream's libtar does (space-padded octal), so with
/// `name = ENTRY_NAME`, `mtime = 0` and upstream's mode the bytes are identical to upstream's.
/// Upstream writes mtime 0 (it is built with `NO_TIMESTAMP`) and the mode of the output file.
///
/// Fails with `InvalidInput` when `name` is empty, longer than 100 bytes or contains NUL, when
/// `mode` exceeds 6 octal digits or when `mtime` exceeds 11 octal digits.
pub fn wrap_header(name: &str, size: u64, mode: u32, mtime: u64) -> Result<Vec<u8>> {
    if name.is_empty() || name.len() > NAME.len() || name.contains('\0') {
        return Err(Error::invalid_input(format!(
            "tar entry name {name:?} must be 1 to {} bytes without NUL",
            NAME.len()
        )));
    }
    if u64::from(mode) > MAX_OCTAL_6 {
        return Err(Error::invalid_input(format!(
            "tar entry mode {mode:o} exceeds 6 octal digits"
        )));
    }
    if mtime > MAX_OCTAL_11 {
        return Err(Error::invalid_input(format!(
            "tar entry mtime {mtime} exceeds 11 octal digits"
        )));
    }

    let record = pax_record("size", &size.to_string());
    let mut pax = [0u8; BLOCK];
    field::copy_str(&mut pax[NAME], PAX_NAME.as_bytes());
    field::put_octal_space(&mut pax[SIZE], record.len() as u64);
    pax[TYPEFLAG] = b'x';
    pax[MAGIC].copy_from_slice(USTAR_MAGIC);
    pax[VERSION].copy_from_slice(USTAR_VERSION);
    seal(&mut pax);

    let mut records = [0u8; BLOCK];
    field::copy_str(&mut records, record.as_bytes());

    let mut entry = [0u8; BLOCK];
    field::copy_str(&mut entry[NAME], name.as_bytes());
    field::put_octal_space_nul(&mut entry[MODE], u64::from(mode));
    field::put_octal_space_nul(&mut entry[UID], 0);
    field::put_octal_space_nul(&mut entry[GID], 0);
    field::put_octal_space(&mut entry[SIZE], 0);
    field::put_octal_space(&mut entry[MTIME], mtime);
    entry[TYPEFLAG] = b'0';
    entry[MAGIC].copy_from_slice(USTAR_MAGIC);
    entry[VERSION].copy_from_slice(USTAR_VERSION);
    field::copy_str(&mut entry[UNAME], OWNER_NAME.as_bytes());
    field::copy_str(&mut entry[GNAME], OWNER_NAME.as_bytes());
    seal(&mut entry);

    let mut out = Vec::with_capacity(HEADER_LEN as usize);
    out.extend_from_slice(&pax);
    out.extend_from_slice(&records);
    out.extend_from_slice(&entry);
    Ok(out)
}

/// Number of zero bytes that pad a payload of `size` bytes to a whole block.
pub fn padding_len(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// What follows a payload of `size` bytes: zero padding to a whole block, then the two zero
/// blocks that end a tar archive.
pub fn trailer(size: u64) -> Vec<u8> {
    vec![0u8; padding_len(size) as usize + 2 * BLOCK]
}

/// Total length of the wrapped file for a payload of `size` bytes, or `None` on overflow.
pub fn wrapped_len(size: u64) -> Option<u64> {
    HEADER_LEN
        .checked_add(field::padded(size)?)?
        .checked_add(2 * BLOCK as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_counts_itself() {
        assert_eq!(pax_record("size", "0"), "9 size=0\n");
        assert_eq!(pax_record("size", "1000003"), "16 size=1000003\n");
        // body of 97 bytes: 2 digits give 99, which is still 2 digits
        let v = "x".repeat(90);
        assert_eq!(pax_record("size", &v).len(), 99);
        // body of 98 bytes: 98 + 2 = 100 needs 3 digits -> 101
        let v = "x".repeat(91);
        let r = pax_record("size", &v);
        assert_eq!(r.len(), 101);
        assert!(r.starts_with("101 "));
        for n in 0..300 {
            let r = pax_record("k", &"v".repeat(n));
            let (len, _) = r.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), r.len(), "value length {n}");
        }
    }

    #[test]
    fn header_fields_match_upstream_formatting() {
        let h = wrap_header(ENTRY_NAME, 1_000_003, 0o100644, 0).unwrap();
        assert_eq!(h.len(), 1536);
        let pax = &h[..512];
        assert_eq!(&pax[..14], b"overlaybd.pax\0");
        assert_eq!(&pax[100..124], &[0u8; 24], "mode/uid/gid left NUL");
        assert_eq!(&pax[124..136], b"         20 ", "record length 16 in octal");
        assert_eq!(pax[156], b'x');
        assert_eq!(&pax[257..265], b"ustar\x0000");
        assert_eq!(&h[512..528], b"16 size=1000003\n");
        assert!(h[528..1024].iter().all(|&b| b == 0));
        let e = &h[1024..];
        assert_eq!(&e[..17], b"overlaybd.commit\0");
        assert_eq!(&e[100..124], b"100644 \0     0 \0     0 \0");
        assert_eq!(&e[124..148], b"          0           0 ");
        assert_eq!(e[156], b'0');
        assert_eq!(&e[265..270], b"root\0");
        assert_eq!(&e[297..302], b"root\0");
        for block in [pax, e] {
            let b: &[u8; 512] = block.try_into().unwrap();
            let stored = field::parse_number(&b[CHKSUM]).unwrap();
            assert_eq!(stored, field::checksums(b).0);
            assert_eq!(b[154], b' ');
            assert_eq!(b[155], 0);
        }
    }

    #[test]
    fn rejects_unrepresentable_fields() {
        assert!(wrap_header("", 1, 0o644, 0).is_err());
        assert!(wrap_header(&"n".repeat(101), 1, 0o644, 0).is_err());
        assert!(wrap_header("a\0b", 1, 0o644, 0).is_err());
        assert!(wrap_header("a", 1, 0o1_000_000, 0).is_err());
        assert!(wrap_header("a", 1, 0o644, MAX_OCTAL_11 + 1).is_err());
        assert!(wrap_header(&"n".repeat(100), u64::MAX, 0o777_777, MAX_OCTAL_11).is_ok());
    }

    #[test]
    fn trailer_pads_and_ends() {
        assert_eq!(trailer(0).len(), 1024);
        assert_eq!(trailer(1).len(), 511 + 1024);
        assert_eq!(trailer(512).len(), 1024);
        assert_eq!(wrapped_len(1), Some(1536 + 512 + 1024));
        assert_eq!(wrapped_len(u64::MAX), None);
    }
}
