//! The NBD wire format, as a pure codec: byte slices in, values out, no I/O.
//!
//! Covers what a fixed-newstyle server with simple replies needs (NBD protocol,
//! `doc/proto.md` of github.com/NetworkBlockDevice/nbd, with the INFO and WRITE_ZEROES
//! extensions):
//!
//! ```text
//! S: NBDMAGIC  IHAVEOPT  u16 handshake flags            (greeting)
//! C: u32 client flags
//! C: IHAVEOPT  u32 option  u32 length  data             (repeated)
//! S: REPLY_MAGIC  u32 option  u32 reply type  u32 length  data
//!    ... until NBD_OPT_EXPORT_NAME (S: u64 size, u16 flags, [124 zero bytes])
//!        or an acknowledged NBD_OPT_GO
//! C: REQUEST_MAGIC  u16 flags  u16 type  u64 cookie  u64 offset  u32 length  [data]
//! S: SIMPLE_REPLY_MAGIC  u32 error  u64 cookie  [data]
//! ```
//!
//! Every integer is big-endian. Decoders never panic: bad input gives a [`ProtoError`] that
//! names the field and the byte position in the message.

mod handshake;
mod transmission;

pub use handshake::{
    ClientFlags, ClientOption, InfoRequest, OPTION_HEADER_LEN, OptionHeader, decode_client_flags,
    decode_option_header, encode_export_name_reply, encode_greeting, encode_info_block_size,
    encode_info_export, encode_info_name, encode_option_reply, encode_rep_server, parse_option,
};
pub use transmission::{
    Command, REQUEST_LEN, Rejection, Request, SIMPLE_REPLY_LEN, check_request, decode_request,
    encode_simple_reply, nbd_errno,
};

/// `NBDMAGIC`, first 8 bytes of the server greeting.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: second word of the greeting and the magic of every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Longest string (export name, message) the protocol allows.
pub const MAX_STRING_LEN: usize = 4096;
/// Largest option payload this server reads into memory; longer ones are skipped unread.
pub const MAX_OPTION_LEN: u32 = 64 << 10;
/// Largest READ or WRITE payload this server accepts (advertised as the maximum block size).
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// Preferred block size advertised to clients.
pub const PREFERRED_BLOCK_SIZE: u32 = 4096;

/// Handshake flag: the server speaks fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the server can omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: the client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: omit the 124 zero bytes.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Transmission flag: always set.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: the export is read-only.
pub const FLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: `NBD_CMD_FLUSH` is supported.
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: `NBD_CMD_FLAG_FUA` is supported.
pub const FLAG_SEND_FUA: u16 = 1 << 3;
/// Transmission flag: rotational medium.
pub const FLAG_ROTATIONAL: u16 = 1 << 4;
/// Transmission flag: `NBD_CMD_TRIM` is supported.
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
/// Transmission flag: `NBD_CMD_WRITE_ZEROES` is supported.
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag: `NBD_CMD_FLAG_DF` is supported (structured replies only).
pub const FLAG_SEND_DF: u16 = 1 << 7;
/// Transmission flag: flush and FUA are visible across all connections.
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Option: choose an export and enter transmission (no reply on failure: disconnect).
pub const OPT_EXPORT_NAME: u32 = 1;
/// Option: end the negotiation.
pub const OPT_ABORT: u32 = 2;
/// Option: list exports.
pub const OPT_LIST: u32 = 3;
/// Option: upgrade to TLS.
pub const OPT_STARTTLS: u32 = 5;
/// Option: describe an export.
pub const OPT_INFO: u32 = 6;
/// Option: describe an export and enter transmission.
pub const OPT_GO: u32 = 7;
/// Option: use structured replies.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// Option: list metadata contexts.
pub const OPT_LIST_META_CONTEXT: u32 = 10;
/// Option: select metadata contexts.
pub const OPT_SET_META_CONTEXT: u32 = 11;

/// Option reply: done.
pub const REP_ACK: u32 = 1;
/// Option reply: one export of a list.
pub const REP_SERVER: u32 = 2;
/// Option reply: one item of export information.
pub const REP_INFO: u32 = 3;
const REP_ERR: u32 = 1 << 31;
/// Option error: unknown option.
pub const REP_ERR_UNSUP: u32 = REP_ERR + 1;
/// Option error: forbidden by policy.
pub const REP_ERR_POLICY: u32 = REP_ERR + 2;
/// Option error: malformed option.
pub const REP_ERR_INVALID: u32 = REP_ERR + 3;
/// Option error: unsupported on this platform.
pub const REP_ERR_PLATFORM: u32 = REP_ERR + 4;
/// Option error: TLS required.
pub const REP_ERR_TLS_REQD: u32 = REP_ERR + 5;
/// Option error: no such export.
pub const REP_ERR_UNKNOWN: u32 = REP_ERR + 6;
/// Option error: the server is shutting down.
pub const REP_ERR_SHUTDOWN: u32 = REP_ERR + 7;
/// Option error: the client must request block sizes.
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = REP_ERR + 8;

/// Information type: size and transmission flags (always sent).
pub const INFO_EXPORT: u16 = 0;
/// Information type: the export's canonical name.
pub const INFO_NAME: u16 = 1;
/// Information type: a human-readable description.
pub const INFO_DESCRIPTION: u16 = 2;
/// Information type: block size constraints.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Command flag: force unit access (persist before replying).
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag (write zeroes): do not punch a hole.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// Command flag (read): do not fragment the structured reply.
pub const CMD_FLAG_DF: u16 = 1 << 2;
/// Command flag (block status): one extent only.
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
/// Command flag (write zeroes): fail fast when zeroing is slow.
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

/// NBD error value: operation not permitted (e.g. write to a read-only export).
pub const NBD_EPERM: u32 = 1;
/// NBD error value: input/output error.
pub const NBD_EIO: u32 = 5;
/// NBD error value: out of memory.
pub const NBD_ENOMEM: u32 = 12;
/// NBD error value: invalid argument.
pub const NBD_EINVAL: u32 = 22;
/// NBD error value: no space left (e.g. write past the end).
pub const NBD_ENOSPC: u32 = 28;
/// NBD error value: value too large.
pub const NBD_EOVERFLOW: u32 = 75;
/// NBD error value: operation not supported.
pub const NBD_ENOTSUP: u32 = 95;
/// NBD error value: the server is shutting down.
pub const NBD_ESHUTDOWN: u32 = 108;

/// Malformed protocol input. Each variant names the field and where it starts in its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The message ends before `field` does.
    #[error("{field} at byte {at}: need {need} bytes, only {have} left")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Its position in the message.
        at: usize,
        /// Bytes the field needs.
        need: usize,
        /// Bytes that were left.
        have: usize,
    },
    /// A magic number is wrong.
    #[error("{field} at byte {at}: bad magic {found:#x}, expected {expected:#x}")]
    BadMagic {
        /// The magic field.
        field: &'static str,
        /// Its position in the message.
        at: usize,
        /// What was there.
        found: u64,
        /// What the protocol requires.
        expected: u64,
    },
    /// The client flags contain a bit this server does not know or did not offer.
    #[error("client flags at byte 0: bits {bits:#x} are unknown or were not offered")]
    BadClientFlags {
        /// The offending bits.
        bits: u32,
    },
    /// A length is over its limit.
    #[error("{field} at byte {at}: length {len} is over the limit of {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its position in the message.
        at: usize,
        /// The length found.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A string is not valid UTF-8 or contains NUL.
    #[error("{field} at byte {at}: {reason}")]
    BadString {
        /// The field.
        field: &'static str,
        /// Its position in the message.
        at: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Bytes follow the last field of a message that must end there.
    #[error("{field} at byte {at}: {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// The message.
        field: &'static str,
        /// Where the extra bytes start.
        at: usize,
        /// How many there are.
        extra: usize,
    },
}

/// Little cursor over a message, for the decoders: every read names its field.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ProtoError> {
        let have = self.remaining();
        let out = self
            .buf
            .get(self.pos..)
            .and_then(|rest| rest.get(..n))
            .ok_or(ProtoError::Truncated {
                field,
                at: self.pos,
                need: n,
                have,
            })?;
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProtoError> {
        let b = self.bytes(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, ProtoError> {
        self.array(field).map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, ProtoError> {
        self.array(field).map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, ProtoError> {
        self.array(field).map(u64::from_be_bytes)
    }

    /// A protocol string of `len` bytes: UTF-8, no NUL, at most [`MAX_STRING_LEN`].
    pub(crate) fn string(&mut self, len: usize, field: &'static str) -> Result<String, ProtoError> {
        let at = self.pos;
        if len > MAX_STRING_LEN {
            return Err(ProtoError::TooLong {
                field,
                at,
                len: len as u64,
                max: MAX_STRING_LEN as u64,
            });
        }
        let raw = self.bytes(len, field)?;
        if raw.contains(&0) {
            return Err(ProtoError::BadString {
                field,
                at,
                reason: "contains a NUL byte",
            });
        }
        String::from_utf8(raw.to_vec()).map_err(|_| ProtoError::BadString {
            field,
            at,
            reason: "is not valid UTF-8",
        })
    }

    pub(crate) fn finish(&self, field: &'static str) -> Result<(), ProtoError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(ProtoError::TrailingBytes {
                field,
                at: self.pos,
                extra,
            }),
        }
    }
}
