//! Transmission messages: requests, their validation, simple replies, error values.

use super::{
    CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, FLAG_READ_ONLY, MAX_PAYLOAD, NBD_EINVAL, NBD_EIO, NBD_ENOMEM,
    NBD_ENOSPC, NBD_ENOTSUP, NBD_EOVERFLOW, NBD_EPERM, NBD_ESHUTDOWN, ProtoError, REQUEST_MAGIC,
    Reader, SIMPLE_REPLY_MAGIC,
};

/// Bytes of a request header.
pub const REQUEST_LEN: usize = 28;
/// Bytes of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;

/// A request type (`NBD_CMD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// `NBD_CMD_READ` (0).
    Read,
    /// `NBD_CMD_WRITE` (1): `length` bytes of data follow the header.
    Write,
    /// `NBD_CMD_DISC` (2): soft disconnect, no reply.
    Disc,
    /// `NBD_CMD_FLUSH` (3).
    Flush,
    /// `NBD_CMD_TRIM` (4).
    Trim,
    /// `NBD_CMD_CACHE` (5).
    Cache,
    /// `NBD_CMD_WRITE_ZEROES` (6).
    WriteZeroes,
    /// `NBD_CMD_BLOCK_STATUS` (7).
    BlockStatus,
    /// Any other type.
    Unknown(u16),
}

impl Command {
    /// The wire value.
    pub fn code(self) -> u16 {
        match self {
            Command::Read => 0,
            Command::Write => 1,
            Command::Disc => 2,
            Command::Flush => 3,
            Command::Trim => 4,
            Command::Cache => 5,
            Command::WriteZeroes => 6,
            Command::BlockStatus => 7,
            Command::Unknown(c) => c,
        }
    }

    /// The command for a wire value.
    pub fn from_code(code: u16) -> Command {
        match code {
            0 => Command::Read,
            1 => Command::Write,
            2 => Command::Disc,
            3 => Command::Flush,
            4 => Command::Trim,
            5 => Command::Cache,
            6 => Command::WriteZeroes,
            7 => Command::BlockStatus,
            c => Command::Unknown(c),
        }
    }

    /// Whether the command modifies the export.
    pub fn writes(self) -> bool {
        matches!(self, Command::Write | Command::Trim | Command::WriteZeroes)
    }
}

/// A decoded request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags (`NBD_CMD_FLAG_*`).
    pub flags: u16,
    /// Request type.
    pub command: Command,
    /// The client's cookie (a.k.a. handle), echoed in the reply.
    pub cookie: u64,
    /// Byte offset in the export.
    pub offset: u64,
    /// Byte length.
    pub length: u32,
}

impl Request {
    /// Bytes of data that follow this header on the wire (only writes carry data).
    pub fn payload_len(&self) -> u32 {
        if self.command == Command::Write {
            self.length
        } else {
            0
        }
    }

    /// The header's wire form (the inverse of [`decode_request`]).
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut out = [0u8; REQUEST_LEN];
        out[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        out[4..6].copy_from_slice(&self.flags.to_be_bytes());
        out[6..8].copy_from_slice(&self.command.code().to_be_bytes());
        out[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        out[16..24].copy_from_slice(&self.offset.to_be_bytes());
        out[24..].copy_from_slice(&self.length.to_be_bytes());
        out
    }
}

/// Decode a request header from the first [`REQUEST_LEN`] bytes of `buf`.
pub fn decode_request(buf: &[u8]) -> Result<Request, ProtoError> {
    let mut r = Reader::new(buf);
    let magic = r.u32("request magic")?;
    if magic != REQUEST_MAGIC {
        return Err(ProtoError::BadMagic {
            field: "request magic",
            at: 0,
            found: u64::from(magic),
            expected: u64::from(REQUEST_MAGIC),
        });
    }
    Ok(Request {
        flags: r.u16("command flags")?,
        command: Command::from_code(r.u16("request type")?),
        cookie: r.u64("request cookie")?,
        offset: r.u64("request offset")?,
        length: r.u32("request length")?,
    })
}

/// Why a request is refused before it reaches the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// NBD error value for the reply.
    pub errno: u32,
    /// When set, the connection cannot continue (a write payload too large to read and
    /// skip): the server drops the connection instead of replying.
    pub fatal: bool,
    /// Human-readable reason, for the log.
    pub reason: String,
}

fn reject(errno: u32, reason: String) -> Result<(), Rejection> {
    Err(Rejection {
        errno,
        fatal: false,
        reason,
    })
}

/// Check a request against an export of `size` bytes advertised with `transmission_flags`:
/// command known and supported, flags valid for the command, payload within
/// [`MAX_PAYLOAD`], export writable for writing commands, range inside the export.
///
/// Out-of-range writes get `ENOSPC` (as the protocol recommends), other out-of-range
/// requests `EINVAL`, writes to a read-only export `EPERM`. Flush and disconnect ignore
/// offset and length.
pub fn check_request(req: &Request, size: u64, transmission_flags: u16) -> Result<(), Rejection> {
    let cmd = req.command;
    let allowed_flags = match cmd {
        Command::Read | Command::Write | Command::Flush | Command::Trim | Command::Disc => {
            CMD_FLAG_FUA
        }
        Command::WriteZeroes => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE,
        Command::Cache | Command::BlockStatus | Command::Unknown(_) => {
            return reject(
                NBD_EINVAL,
                format!("request type {} is not supported", cmd.code()),
            );
        }
    };
    if matches!(cmd, Command::Read | Command::Write) && req.length > MAX_PAYLOAD {
        return Err(Rejection {
            errno: NBD_EINVAL,
            fatal: cmd == Command::Write,
            reason: format!(
                "request length {} is over the maximum payload of {MAX_PAYLOAD} bytes",
                req.length
            ),
        });
    }
    if req.flags & !allowed_flags != 0 {
        return reject(
            NBD_EINVAL,
            format!(
                "command flags {:#x} are not valid for {cmd:?}",
                req.flags & !allowed_flags
            ),
        );
    }
    if matches!(cmd, Command::Flush | Command::Disc) {
        return Ok(());
    }
    if cmd.writes() && transmission_flags & FLAG_READ_ONLY != 0 {
        return reject(NBD_EPERM, "the export is read-only".into());
    }
    match req.offset.checked_add(u64::from(req.length)) {
        Some(end) if end <= size => Ok(()),
        _ => reject(
            if matches!(cmd, Command::Write | Command::WriteZeroes) {
                NBD_ENOSPC
            } else {
                NBD_EINVAL
            },
            format!(
                "{} bytes at offset {} are beyond the end of the export ({size} bytes)",
                req.length, req.offset
            ),
        ),
    }
}

/// A simple reply header: magic, error value, cookie. A successful read's data follows it.
pub fn encode_simple_reply(error: u32, cookie: u64) -> [u8; SIMPLE_REPLY_LEN] {
    let mut out = [0u8; SIMPLE_REPLY_LEN];
    out[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&error.to_be_bytes());
    out[8..].copy_from_slice(&cookie.to_be_bytes());
    out
}

/// The NBD error value for a local `errno` (the protocol allows only a few; everything
/// unrecognised becomes `EIO`).
pub fn nbd_errno(errno: i32) -> u32 {
    match errno {
        libc::EPERM | libc::EROFS | libc::EACCES => NBD_EPERM,
        libc::ENOMEM => NBD_ENOMEM,
        libc::EINVAL => NBD_EINVAL,
        libc::ENOSPC | libc::EDQUOT | libc::EFBIG => NBD_ENOSPC,
        libc::EOVERFLOW => NBD_EOVERFLOW,
        libc::EOPNOTSUPP => NBD_ENOTSUP,
        libc::ESHUTDOWN => NBD_ESHUTDOWN,
        _ => NBD_EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{CMD_FLAG_DF, CMD_FLAG_FAST_ZERO};

    fn req(command: Command, flags: u16, offset: u64, length: u32) -> Request {
        Request {
            flags,
            command,
            cookie: 0xdead_beef_0102_0304,
            offset,
            length,
        }
    }

    #[test]
    fn request_round_trip() {
        let r = req(Command::WriteZeroes, CMD_FLAG_NO_HOLE, 1 << 40, 4096);
        let b = r.encode();
        assert_eq!(&b[..4], &[0x25, 0x60, 0x95, 0x13]);
        assert_eq!(&b[6..8], &[0, 6]);
        assert_eq!(decode_request(&b).unwrap(), r);
        assert_eq!(
            decode_request(
                &Request {
                    command: Command::Unknown(99),
                    ..r
                }
                .encode()
            )
            .unwrap()
            .command,
            Command::Unknown(99)
        );
        for c in 0..10u16 {
            assert_eq!(Command::from_code(c).code(), c);
        }
    }

    #[test]
    fn bad_requests_name_the_field() {
        let mut b = req(Command::Read, 0, 0, 1).encode();
        b[0] = 0;
        assert!(matches!(
            decode_request(&b),
            Err(ProtoError::BadMagic {
                field: "request magic",
                found: 0x0060_9513,
                ..
            })
        ));
        let b = req(Command::Read, 0, 0, 1).encode();
        assert_eq!(
            decode_request(&b[..20]).unwrap_err(),
            ProtoError::Truncated {
                field: "request offset",
                at: 16,
                need: 8,
                have: 4
            }
        );
    }

    #[test]
    fn validation() {
        let rw = 0;
        let ro = FLAG_READ_ONLY;
        let ok = |r: Request, f| check_request(&r, 1000, f).map_err(|e| (e.errno, e.fatal));
        assert_eq!(ok(req(Command::Read, 0, 0, 1000), rw), Ok(()));
        assert_eq!(ok(req(Command::Read, CMD_FLAG_FUA, 999, 1), ro), Ok(()));
        assert_eq!(
            ok(req(Command::Read, 0, 999, 2), rw),
            Err((NBD_EINVAL, false))
        );
        assert_eq!(
            ok(req(Command::Read, 0, u64::MAX, 2), rw),
            Err((NBD_EINVAL, false))
        );
        assert_eq!(ok(req(Command::Write, 0, 1000, 0), rw), Ok(()));
        assert_eq!(
            ok(req(Command::Write, 0, 1000, 1), rw),
            Err((NBD_ENOSPC, false))
        );
        assert_eq!(
            ok(req(Command::Write, 0, 0, 1), ro),
            Err((NBD_EPERM, false))
        );
        assert_eq!(ok(req(Command::Trim, 0, 0, 1), ro), Err((NBD_EPERM, false)));
        assert_eq!(
            ok(req(Command::Trim, 0, 1, 1000), rw),
            Err((NBD_EINVAL, false))
        );
        assert_eq!(
            ok(req(Command::WriteZeroes, 0, 1, 1000), rw),
            Err((NBD_ENOSPC, false))
        );
        assert_eq!(
            ok(
                req(Command::WriteZeroes, CMD_FLAG_NO_HOLE | CMD_FLAG_FUA, 0, 10),
                rw
            ),
            Ok(())
        );
        assert_eq!(
            ok(req(Command::WriteZeroes, CMD_FLAG_FAST_ZERO, 0, 10), rw),
            Err((NBD_EINVAL, false))
        );
        assert_eq!(
            ok(req(Command::Write, CMD_FLAG_NO_HOLE, 0, 1), rw),
            Err((NBD_EINVAL, false))
        );
        assert_eq!(
            ok(req(Command::Read, CMD_FLAG_DF, 0, 1), rw),
            Err((NBD_EINVAL, false))
        );
        assert_eq!(ok(req(Command::Flush, 0, 5000, 5000), ro), Ok(()));
        assert_eq!(ok(req(Command::Disc, 0, 0, 0), rw), Ok(()));
        assert_eq!(
            ok(req(Command::Cache, 0, 0, 1), rw),
            Err((NBD_EINVAL, false))
        );
        assert_eq!(
            ok(req(Command::BlockStatus, 0, 0, 1), rw),
            Err((NBD_EINVAL, false))
        );
        assert_eq!(
            ok(req(Command::Unknown(42), 0, 0, 1), rw),
            Err((NBD_EINVAL, false))
        );
        // Oversized payloads: a read is refused, a write cannot be skipped safely.
        let big = MAX_PAYLOAD + 1;
        let huge = u64::MAX / 2;
        assert_eq!(
            check_request(&req(Command::Read, 0, 0, big), huge, rw).map_err(|e| (e.errno, e.fatal)),
            Err((NBD_EINVAL, false))
        );
        assert_eq!(
            check_request(&req(Command::Write, 0, 0, big), huge, rw)
                .map_err(|e| (e.errno, e.fatal)),
            Err((NBD_EINVAL, true))
        );
        // Trim and write-zeroes have no payload: any length inside the export is fine.
        assert_eq!(
            check_request(&req(Command::Trim, 0, 0, u32::MAX), huge, rw),
            Ok(())
        );
    }

    #[test]
    fn replies_and_errnos() {
        let r = encode_simple_reply(NBD_EIO, 7);
        assert_eq!(
            r,
            [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 7]
        );
        assert_eq!(nbd_errno(libc::EROFS), NBD_EPERM);
        assert_eq!(nbd_errno(libc::EDQUOT), NBD_ENOSPC);
        assert_eq!(nbd_errno(libc::ENOENT), NBD_EIO);
        assert_eq!(nbd_errno(libc::EOPNOTSUPP), NBD_ENOTSUP);
        assert_eq!(nbd_errno(libc::EINVAL), NBD_EINVAL);
        assert_eq!(nbd_errno(0), NBD_EIO);
    }
}
