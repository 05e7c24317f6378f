//! The code the fuzz target `nbd` runs, shared with the corpus replay test
//! (`tests/fuzz_corpus.rs`) so every corpus and crash file is also checked by `cargo test`.
//! Not a stable API.
//!
//! [`fuzz_one`] feeds the bytes to the option and request decoders (checking that what
//! decodes re-encodes to the same bytes and that accepted requests are really inside the
//! export), then plays them as the client side of a whole session against an in-memory
//! export, and checks the device content and the reply stream against a small model.

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use obd_core::{MemDevice, ReadAt};

use crate::negotiate::{Export, HANDSHAKE_FLAGS, negotiate};
use crate::proto::{
    self, ClientOption, Command, FLAG_READ_ONLY, IHAVEOPT, MAX_PAYLOAD, OPTION_HEADER_LEN,
    REQUEST_LEN, SIMPLE_REPLY_LEN,
};
use crate::transmit;

/// Size of the fuzzed export.
const EXPORT_SIZE: usize = 64 << 10;

/// Run every check on `data`; panics when a promise is broken.
pub fn fuzz_one(data: &[u8]) {
    decoders(data);
    session(data, false);
    session(data, true);
}

fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn decoders(data: &[u8]) {
    if let Ok(f) = proto::decode_client_flags(data, HANDSHAKE_FLAGS) {
        let bits = be32(data);
        assert!(bits <= 3);
        assert_eq!(f.fixed_newstyle, bits & 1 != 0);
        assert_eq!(f.no_zeroes, bits & 2 != 0);
    }
    for code in [1, 2, 3, 5, 6, 7, 8, 10, 11, 0xdead] {
        check_option(code, data);
    }
    // The bytes as a stream of options.
    let mut rest = data;
    while rest.len() >= OPTION_HEADER_LEN {
        let Ok(h) = proto::decode_option_header(rest) else {
            break;
        };
        assert_eq!(&rest[..8], &IHAVEOPT.to_be_bytes());
        let body = &rest[OPTION_HEADER_LEN..];
        let len = (h.length as usize).min(body.len());
        check_option(h.option, &body[..len]);
        rest = &body[len..];
    }
    // The bytes as requests, at every offset of the first few and back to back.
    let starts = (0..data.len().min(8)).chain((0..data.len()).step_by(REQUEST_LEN));
    for start in starts {
        let Some(window) = data.get(start..start + REQUEST_LEN) else {
            continue;
        };
        if let Ok(req) = proto::decode_request(window) {
            assert_eq!(&req.encode()[..], window);
            check_validation(&req);
        }
    }
}

fn check_option(code: u32, data: &[u8]) {
    match proto::parse_option(code, data) {
        Ok(ClientOption::ExportName(name)) => assert_eq!(name.as_bytes(), data),
        Ok(ClientOption::List) => assert!(data.is_empty()),
        Ok(ClientOption::Info(req) | ClientOption::Go(req)) => {
            let mut again = (req.name.len() as u32).to_be_bytes().to_vec();
            again.extend_from_slice(req.name.as_bytes());
            again.extend_from_slice(&(req.requests.len() as u16).to_be_bytes());
            for r in &req.requests {
                again.extend_from_slice(&r.to_be_bytes());
            }
            assert_eq!(again, data);
        }
        Ok(_) => {}
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

fn check_validation(req: &proto::Request) {
    for (size, flags) in [(EXPORT_SIZE as u64, 0), (1 << 40, FLAG_READ_ONLY), (0, 0)] {
        match proto::check_request(req, size, flags) {
            Ok(()) => {
                let cmd = req.command;
                assert!(matches!(
                    cmd,
                    Command::Read
                        | Command::Write
                        | Command::Flush
                        | Command::Trim
                        | Command::WriteZeroes
                        | Command::Disc
                ));
                if flags & FLAG_READ_ONLY != 0 {
                    assert!(!cmd.writes());
                }
                if !matches!(cmd, Command::Flush | Command::Disc) {
                    assert!(req.offset + u64::from(req.length) <= size);
                }
                if matches!(cmd, Command::Read | Command::Write) {
                    assert!(req.length <= MAX_PAYLOAD);
                }
            }
            Err(rej) => {
                assert_ne!(rej.errno, 0);
                if rej.fatal {
                    assert!(req.command == Command::Write && req.length > MAX_PAYLOAD);
                }
            }
        }
    }
}

/// Play `data` as a client against a real session on a memory export.
fn session(data: &[u8], read_only: bool) {
    let initial: Vec<u8> = (0..EXPORT_SIZE).map(|i| (i * 7 + i / 251) as u8).collect();
    let mem = Arc::new(MemDevice::from_vec(initial.clone()));
    let dev: Arc<dyn obd_core::BlockDevice> = if read_only {
        Arc::new(obd_core::ReadOnly(Arc::clone(&mem)))
    } else {
        Arc::clone(&mem) as _
    };
    let export = Export {
        dev,
        name: "fuzz".into(),
    };
    let mut input = Cursor::new(data);
    let mut out = Vec::new();
    let result = negotiate(&mut input, &mut out, &export, &AtomicBool::new(false));
    assert_eq!(&out[..18], &proto::encode_greeting(HANDSHAKE_FLAGS)[..]);
    let Ok(Some(neg)) = result else {
        assert_eq!(mem.to_vec(), initial);
        return;
    };
    assert_eq!(neg.size, EXPORT_SIZE as u64);
    assert_eq!(neg.flags & FLAG_READ_ONLY != 0, read_only);
    let start = input.position() as usize;
    let mut replies = Vec::new();
    transmit::serve(&mut input, &mut replies, &export, neg, 1, &|| {});

    // Model: what the device and the reply stream must be after these requests.
    let mut model = initial;
    let mut expect_len = 0usize;
    let mut rest = &data[start..];
    while let Some(hdr) = rest.get(..REQUEST_LEN) {
        let Ok(req) = proto::decode_request(hdr) else {
            break;
        };
        rest = &rest[REQUEST_LEN..];
        if req.command == Command::Disc {
            break;
        }
        let (off, len) = (req.offset as usize, req.length as usize);
        match proto::check_request(&req, neg.size, neg.flags) {
            Err(rej) if rej.fatal => break,
            Err(_) => {
                let Some(r) = rest.get(req.payload_len() as usize..) else {
                    break;
                };
                rest = r;
            }
            Ok(()) => match req.command {
                Command::Write => {
                    let Some(payload) = rest.get(..len) else {
                        break;
                    };
                    model[off..off + len].copy_from_slice(payload);
                    rest = &rest[len..];
                }
                Command::Trim | Command::WriteZeroes => model[off..off + len].fill(0),
                Command::Read => expect_len += len,
                _ => {}
            },
        }
        expect_len += SIMPLE_REPLY_LEN;
    }
    assert_eq!(mem.to_vec(), model, "device content differs from the model");
    assert_eq!(replies.len(), expect_len, "reply stream length");
    assert_eq!(mem.size(), EXPORT_SIZE as u64);
}

/// Whether `data`, played as a client, gets through the handshake into transmission (for
/// checking that a seed corpus exercises both phases).
pub fn reaches_transmission(data: &[u8]) -> bool {
    let export = Export {
        dev: Arc::new(MemDevice::zeroed(EXPORT_SIZE)),
        name: "fuzz".into(),
    };
    let mut out = Vec::new();
    matches!(
        negotiate(
            &mut Cursor::new(data),
            &mut out,
            &export,
            &AtomicBool::new(false)
        ),
        Ok(Some(_))
    )
}
