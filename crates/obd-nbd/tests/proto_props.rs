//! Property tests of the codec, and the fuzz checks on generated sessions.

use obd_nbd::proto::{self, ClientOption, Command, InfoRequest, Request};
use proptest::prelude::*;

fn command() -> impl Strategy<Value = Command> {
    any::<u16>().prop_map(Command::from_code)
}

fn request() -> impl Strategy<Value = Request> {
    (
        any::<u16>(),
        command(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(flags, command, cookie, offset, length)| Request {
            flags,
            command,
            cookie,
            offset,
            length,
        })
}

fn info_data(req: &InfoRequest) -> Vec<u8> {
    let mut d = (req.name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(req.name.as_bytes());
    d.extend_from_slice(&(req.requests.len() as u16).to_be_bytes());
    for r in &req.requests {
        d.extend_from_slice(&r.to_be_bytes());
    }
    d
}

/// A client byte stream: a valid handshake ending in GO, then requests of the commands the
/// server knows, mostly inside a 64 KiB export, some with payloads.
fn session() -> impl Strategy<Value = Vec<u8>> {
    let req = (0u16..8, 0u16..4, 0u64..70_000, 0u32..5000, any::<u8>());
    proptest::collection::vec(req, 0..40).prop_map(|reqs| {
        let mut out = vec![0, 0, 0, 3];
        out.extend_from_slice(b"IHAVEOPT");
        out.extend_from_slice(&7u32.to_be_bytes());
        out.extend_from_slice(&10u32.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 4, b'f', b'u', b'z', b'z', 0, 0]);
        for (i, (cmd, flags, off, len, fill)) in reqs.into_iter().enumerate() {
            let r = Request {
                flags,
                command: Command::from_code(cmd),
                cookie: i as u64,
                offset: off,
                length: len,
            };
            out.extend_from_slice(&r.encode());
            if r.command == Command::Write {
                out.extend(std::iter::repeat_n(fill, len as usize));
            }
        }
        out
    })
}

proptest! {
    #[test]
    fn requests_round_trip(r in request()) {
        prop_assert_eq!(proto::decode_request(&r.encode()), Ok(r));
    }

    #[test]
    fn info_requests_round_trip(
        name in "[a-zA-Z0-9._-]{0,64}",
        requests in proptest::collection::vec(any::<u16>(), 0..20),
        go in any::<bool>(),
    ) {
        let req = InfoRequest { name, requests };
        let code = if go { proto::OPT_GO } else { proto::OPT_INFO };
        let want = if go { ClientOption::Go(req.clone()) } else { ClientOption::Info(req.clone()) };
        prop_assert_eq!(proto::parse_option(code, &info_data(&req)), Ok(want));
    }

    #[test]
    fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        obd_nbd::fuzzing::fuzz_one(&data);
    }

    #[test]
    fn generated_sessions_match_the_model(data in session()) {
        prop_assert!(obd_nbd::fuzzing::reaches_transmission(&data));
        obd_nbd::fuzzing::fuzz_one(&data);
    }
}
