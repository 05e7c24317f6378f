//! The server side of the fixed-newstyle handshake, over any byte stream.

use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use obd_core::BlockDevice;
use tracing::{debug, warn};

use crate::proto::{
    self, ClientOption, FLAG_CAN_MULTI_CONN, FLAG_FIXED_NEWSTYLE, FLAG_HAS_FLAGS, FLAG_NO_ZEROES,
    FLAG_READ_ONLY, FLAG_SEND_FLUSH, FLAG_SEND_FUA, FLAG_SEND_TRIM, FLAG_SEND_WRITE_ZEROES,
    INFO_NAME, InfoRequest, MAX_OPTION_LEN, MAX_PAYLOAD, OPT_ABORT, OPT_EXPORT_NAME,
    OPTION_HEADER_LEN, PREFERRED_BLOCK_SIZE, REP_ACK, REP_ERR_INVALID, REP_ERR_SHUTDOWN,
    REP_ERR_UNKNOWN, REP_ERR_UNSUP, REP_INFO, REP_SERVER,
};

/// Handshake flags this server sends.
pub(crate) const HANDSHAKE_FLAGS: u16 = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES;

/// Options a client may send before the server gives up on it.
const MAX_OPTIONS: usize = 10_000;

/// The one export a server offers.
pub(crate) struct Export {
    /// The device behind it.
    pub(crate) dev: Arc<dyn BlockDevice>,
    /// Its name (clients asking for "" get it too).
    pub(crate) name: String,
}

impl Export {
    /// Transmission flags advertised for the device.
    pub(crate) fn transmission_flags(&self) -> u16 {
        let mut flags = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_CAN_MULTI_CONN;
        if self.dev.is_read_only() {
            flags |= FLAG_READ_ONLY;
        } else {
            flags |= FLAG_SEND_FUA | FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES;
        }
        flags
    }

    fn matches(&self, name: &str) -> bool {
        name.is_empty() || name == self.name
    }
}

/// What the transmission phase needs from the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Negotiated {
    /// Export size as told to the client.
    pub(crate) size: u64,
    /// Transmission flags as told to the client.
    pub(crate) flags: u16,
}

/// Run the handshake. `Ok(Some(..))`: enter transmission; `Ok(None)`: the session ended
/// (abort, or a client that broke the protocol, logged here); `Err`: the stream failed.
pub(crate) fn negotiate<R: BufRead, W: Write>(
    r: &mut R,
    w: &mut W,
    export: &Export,
    stopping: &AtomicBool,
) -> io::Result<Option<Negotiated>> {
    w.write_all(&proto::encode_greeting(HANDSHAKE_FLAGS))?;
    w.flush()?;
    let mut word = [0u8; 4];
    r.read_exact(&mut word)?;
    let client = match proto::decode_client_flags(&word, HANDSHAKE_FLAGS) {
        Ok(c) => c,
        Err(e) => {
            warn!(export = %export.name, error = %e, "NBD client sent bad flags; disconnecting");
            return Ok(None);
        }
    };
    for _ in 0..MAX_OPTIONS {
        let mut hdr = [0u8; OPTION_HEADER_LEN];
        r.read_exact(&mut hdr)?;
        let hdr = match proto::decode_option_header(&hdr) {
            Ok(h) => h,
            Err(e) => {
                warn!(export = %export.name, error = %e, "NBD handshake: bad option; disconnecting");
                return Ok(None);
            }
        };
        let code = hdr.option;
        let mut out = Vec::new();
        if hdr.length > MAX_OPTION_LEN {
            if code == OPT_EXPORT_NAME {
                warn!(export = %export.name, len = hdr.length, "NBD export name too long; disconnecting");
                return Ok(None);
            }
            skip(r, u64::from(hdr.length))?;
            let kind = match proto::parse_option(code, &[]) {
                Ok(ClientOption::Other(_)) => REP_ERR_UNSUP,
                _ => REP_ERR_INVALID,
            };
            let msg = format!("option data of {} bytes is too long", hdr.length);
            out.extend(proto::encode_option_reply(code, kind, msg.as_bytes()));
            w.write_all(&out)?;
            w.flush()?;
            continue;
        }
        let mut data = vec![0u8; hdr.length as usize];
        r.read_exact(&mut data)?;
        let option = match proto::parse_option(code, &data) {
            Ok(o) => o,
            Err(e) if code == OPT_EXPORT_NAME => {
                warn!(export = %export.name, error = %e, "NBD_OPT_EXPORT_NAME is malformed; disconnecting");
                return Ok(None);
            }
            Err(e) => {
                debug!(export = %export.name, option = code, error = %e, "malformed NBD option");
                let msg = e.to_string();
                w.write_all(&proto::encode_option_reply(
                    code,
                    REP_ERR_INVALID,
                    msg.as_bytes(),
                ))?;
                w.flush()?;
                continue;
            }
        };
        if stopping.load(Ordering::Acquire) && code != OPT_ABORT {
            if code == OPT_EXPORT_NAME {
                return Ok(None);
            }
            let msg = b"the server is shutting down";
            w.write_all(&proto::encode_option_reply(code, REP_ERR_SHUTDOWN, msg))?;
            w.flush()?;
            continue;
        }
        let done = answer(&option, code, client.no_zeroes, export, &mut out);
        w.write_all(&out)?;
        w.flush()?;
        if let Some(end) = done {
            return Ok(end);
        }
    }
    warn!(export = %export.name, "NBD client sent {MAX_OPTIONS} options; disconnecting");
    Ok(None)
}

/// Put the reply to one option into `out`. `Some(..)` ends the handshake.
fn answer(
    option: &ClientOption,
    code: u32,
    no_zeroes: bool,
    export: &Export,
    out: &mut Vec<u8>,
) -> Option<Option<Negotiated>> {
    let negotiated = || Negotiated {
        size: export.dev.size(),
        flags: export.transmission_flags(),
    };
    match option {
        ClientOption::ExportName(name) => {
            if !export.matches(name) {
                warn!(export = %export.name, requested = %name, "NBD_OPT_EXPORT_NAME for an unknown export; disconnecting");
                return Some(None);
            }
            let n = negotiated();
            out.extend(proto::encode_export_name_reply(n.size, n.flags, no_zeroes));
            debug!(export = %export.name, "NBD client entered transmission (EXPORT_NAME)");
            Some(Some(n))
        }
        ClientOption::Abort => {
            out.extend(proto::encode_option_reply(code, REP_ACK, &[]));
            Some(None)
        }
        ClientOption::List => {
            let server = proto::encode_rep_server(&export.name);
            out.extend(proto::encode_option_reply(code, REP_SERVER, &server));
            out.extend(proto::encode_option_reply(code, REP_ACK, &[]));
            None
        }
        ClientOption::Info(req) | ClientOption::Go(req) => {
            let go = matches!(option, ClientOption::Go(_));
            if !export.matches(&req.name) {
                let msg = format!(
                    "export {:?} does not exist (this server has {:?})",
                    req.name, export.name
                );
                out.extend(proto::encode_option_reply(
                    code,
                    REP_ERR_UNKNOWN,
                    msg.as_bytes(),
                ));
                return None;
            }
            let n = negotiated();
            info_replies(code, req, n, export, out);
            if go {
                debug!(export = %export.name, "NBD client entered transmission (GO)");
                Some(Some(n))
            } else {
                None
            }
        }
        ClientOption::StartTls | ClientOption::StructuredReply | ClientOption::Other(_) => {
            let msg = format!("option {code} is not supported by this server");
            out.extend(proto::encode_option_reply(
                code,
                REP_ERR_UNSUP,
                msg.as_bytes(),
            ));
            None
        }
    }
}

/// `NBD_REP_INFO` replies (export, block size, and the name if asked) and the final ACK.
fn info_replies(code: u32, req: &InfoRequest, n: Negotiated, export: &Export, out: &mut Vec<u8>) {
    let info = proto::encode_info_export(n.size, n.flags);
    out.extend(proto::encode_option_reply(code, REP_INFO, &info));
    // Sent whether asked or not (the protocol allows it): tells clients the largest
    // payload we take, and that any alignment is fine.
    let bs = proto::encode_info_block_size(1, PREFERRED_BLOCK_SIZE, MAX_PAYLOAD);
    out.extend(proto::encode_option_reply(code, REP_INFO, &bs));
    if req.requests.contains(&INFO_NAME) {
        let name = proto::encode_info_name(&export.name);
        out.extend(proto::encode_option_reply(code, REP_INFO, &name));
    }
    out.extend(proto::encode_option_reply(code, REP_ACK, &[]));
}

/// Read and drop `len` bytes without buffering them.
pub(crate) fn skip<R: Read>(r: &mut R, len: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(len), &mut io::sink())?;
    if copied < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use obd_core::MemDevice;

    use super::*;
    use crate::proto::{OPT_GO, OPT_LIST, OPT_REPLY_MAGIC};

    fn export() -> Export {
        Export {
            dev: Arc::new(MemDevice::zeroed(4096)),
            name: "e".into(),
        }
    }

    fn option(code: u32, data: &[u8]) -> Vec<u8> {
        let mut m = IHAVEOPT_BYTES.to_vec();
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(&(data.len() as u32).to_be_bytes());
        m.extend_from_slice(data);
        m
    }

    const IHAVEOPT_BYTES: &[u8; 8] = b"IHAVEOPT";

    /// Option replies in `out` after the greeting: (option, type).
    fn replies(out: &[u8]) -> Vec<(u32, u32)> {
        let mut rest = &out[18..];
        let mut v = Vec::new();
        while rest.len() >= 20 {
            assert_eq!(&rest[..8], &OPT_REPLY_MAGIC.to_be_bytes());
            let word = |i: usize| u32::from_be_bytes(rest[i..i + 4].try_into().unwrap());
            let (opt, kind, len) = (word(8), word(12), word(16) as usize);
            v.push((opt, kind));
            rest = &rest[20 + len..];
        }
        assert!(rest.is_empty(), "partial reply");
        v
    }

    #[test]
    fn options_during_shutdown_are_refused_except_abort() {
        let mut input = vec![0, 0, 0, 3];
        input.extend(option(OPT_LIST, &[]));
        input.extend(option(OPT_GO, &[0, 0, 0, 0, 0, 0]));
        input.extend(option(OPT_ABORT, &[]));
        let (mut r, mut w) = (Cursor::new(input), Vec::new());
        let end = negotiate(&mut r, &mut w, &export(), &AtomicBool::new(true)).unwrap();
        assert_eq!(end, None);
        assert_eq!(
            replies(&w),
            [
                (OPT_LIST, REP_ERR_SHUTDOWN),
                (OPT_GO, REP_ERR_SHUTDOWN),
                (OPT_ABORT, REP_ACK)
            ]
        );
        // EXPORT_NAME cannot be refused politely: the session just ends.
        let mut input = vec![0, 0, 0, 3];
        input.extend(option(OPT_EXPORT_NAME, b"e"));
        let (mut r, mut w) = (Cursor::new(input), Vec::new());
        let end = negotiate(&mut r, &mut w, &export(), &AtomicBool::new(true)).unwrap();
        assert_eq!(end, None);
        assert_eq!(w.len(), 18);
    }

    #[test]
    fn go_ends_the_handshake_with_the_export_size() {
        let mut input = vec![0, 0, 0, 1];
        input.extend(option(OPT_GO, &[0, 0, 0, 1, b'e', 0, 0]));
        let (mut r, mut w) = (Cursor::new(input), Vec::new());
        let end = negotiate(&mut r, &mut w, &export(), &AtomicBool::new(false)).unwrap();
        let flags = export().transmission_flags();
        assert_eq!(end, Some(Negotiated { size: 4096, flags }));
        assert_eq!(
            replies(&w),
            [(OPT_GO, REP_INFO), (OPT_GO, REP_INFO), (OPT_GO, REP_ACK)]
        );
    }

    #[test]
    fn end_of_stream_is_an_io_error() {
        let (mut r, mut w) = (Cursor::new(vec![0, 0, 0, 3, b'I']), Vec::new());
        let e = negotiate(&mut r, &mut w, &export(), &AtomicBool::new(false)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn too_many_options_end_the_session() {
        let mut input = vec![0, 0, 0, 3];
        for _ in 0..MAX_OPTIONS {
            input.extend(option(99, &[]));
        }
        input.extend(option(OPT_GO, &[0, 0, 0, 0, 0, 0]));
        let (mut r, mut w) = (Cursor::new(input), Vec::new());
        let end = negotiate(&mut r, &mut w, &export(), &AtomicBool::new(false)).unwrap();
        assert_eq!(end, None);
        assert_eq!(replies(&w).len(), MAX_OPTIONS);
    }
}
