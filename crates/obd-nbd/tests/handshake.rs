//! Handshake variants, with the test client in `common`.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;

use common::*;
use obd_core::{MemDevice, ReadOnly};
use obd_nbd::{NbdAddr, NbdServer};

const SIZE: usize = 1 << 20;
const RW_FLAGS: u16 = TF_HAS_FLAGS | TF_FLUSH | TF_FUA | TF_TRIM | TF_WRITE_ZEROES | TF_MULTI_CONN;

#[test]
fn greeting_offers_fixed_newstyle_and_no_zeroes() {
    let (server, _dev, _dir) = mem_server(pattern(SIZE, 1), "disk");
    let h = Handshake::start(server.addr(), 3).unwrap();
    assert_eq!(h.handshake_flags, 3);
}

#[test]
fn opt_go_by_name_and_default_name() {
    let content = pattern(SIZE, 2);
    let (server, _dev, _dir) = mem_server(content.clone(), "disk");
    for name in ["disk", ""] {
        let mut h = Handshake::start(server.addr(), 3).unwrap();
        let info = h.info(OPT_GO, name, &[1, 3]).unwrap().unwrap();
        assert_eq!(info.size, SIZE as u64);
        assert_eq!(info.flags, RW_FLAGS);
        assert_eq!(
            info.name.as_deref(),
            Some("disk"),
            "canonical name for {name:?}"
        );
        assert_eq!(info.block_size, Some((1, 4096, 32 << 20)));
        let mut c = common::Client::after_go(h, info);
        assert_eq!(c.read(4096, 100).unwrap(), &content[4096..4196]);
    }
}

#[test]
fn opt_info_then_go_on_one_connection() {
    let (server, _dev, _dir) = mem_server(pattern(SIZE, 3), "disk");
    let mut h = Handshake::start(server.addr(), 1).unwrap();
    // INFO without requests still gets export and block size info, no name.
    let info = h.info(OPT_INFO, "disk", &[]).unwrap().unwrap();
    assert_eq!(info.size, SIZE as u64);
    assert_eq!(info.name, None);
    let info2 = h.info(OPT_INFO, "", &[1, 2, 99]).unwrap().unwrap();
    assert_eq!(info2.name.as_deref(), Some("disk"));
    let mut c = h.go("disk").unwrap().unwrap();
    assert_eq!(c.size, SIZE as u64);
    c.flush().unwrap();
    assert!(c.disc());
}

#[test]
fn old_export_name_path_with_and_without_zeroes() {
    let content = pattern(SIZE, 4);
    let (server, _dev, _dir) = mem_server(content.clone(), "disk");
    for (flags, no_zeroes) in [(3, true), (1, false), (0, false)] {
        let h = Handshake::start(server.addr(), flags).unwrap();
        let mut c = h.export_name("disk", no_zeroes).unwrap();
        assert_eq!(c.size, SIZE as u64);
        assert_eq!(c.flags, RW_FLAGS);
        assert_eq!(c.read(0, 512).unwrap(), &content[..512]);
        assert!(c.disc());
    }
    let c = Handshake::start(server.addr(), 3)
        .unwrap()
        .export_name("", true)
        .unwrap();
    assert_eq!(c.size, SIZE as u64);
}

#[test]
fn export_name_for_unknown_export_disconnects() {
    let (server, _dev, _dir) = mem_server(pattern(SIZE, 5), "disk");
    let mut h = Handshake::start(server.addr(), 3).unwrap();
    h.send_option(OPT_EXPORT_NAME, b"other").unwrap();
    assert!(h.sock.closed_by_peer());
}

#[test]
fn opt_go_for_unknown_export_is_an_error_reply_and_haggling_goes_on() {
    let (server, _dev, _dir) = mem_server(pattern(SIZE, 6), "disk");
    let mut h = Handshake::start(server.addr(), 3).unwrap();
    let err = h.info(OPT_GO, "nope", &[]).unwrap().unwrap_err();
    assert_eq!(err.kind, REP_ERR_UNKNOWN);
    let msg = String::from_utf8(err.data).unwrap();
    assert!(msg.contains("nope") && msg.contains("disk"), "{msg}");
    let err = h.info(OPT_INFO, "DISK", &[]).unwrap().unwrap_err();
    assert_eq!(err.kind, REP_ERR_UNKNOWN);
    let mut c = h.go("disk").unwrap().unwrap();
    c.read(0, 1).unwrap();
}

#[test]
fn opt_list_names_the_export() {
    let (server, _dev, _dir) = mem_server(pattern(SIZE, 7), "my-export");
    let mut h = Handshake::start(server.addr(), 3).unwrap();
    let r = h.exchange(OPT_LIST, &[]).unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].kind, REP_SERVER);
    assert_eq!(&r[0].data[..4], &9u32.to_be_bytes());
    assert_eq!(&r[0].data[4..], b"my-export");
    assert_eq!(r[1].kind, REP_ACK);
    // With data: invalid, and the connection continues.
    let r = h.exchange(OPT_LIST, b"x").unwrap();
    assert_eq!(r[0].kind, REP_ERR_INVALID);
    h.go("my-export").unwrap().unwrap();
}

#[test]
fn unknown_and_unsupported_options_get_err_unsup() {
    let (server, _dev, _dir) = mem_server(pattern(SIZE, 8), "disk");
    let mut h = Handshake::start(server.addr(), 3).unwrap();
    for (opt, data) in [
        (0x1234u32, &b"some data"[..]),
        (OPT_STRUCTURED_REPLY, b""),
        (OPT_STARTTLS, b""),
        (OPT_SET_META_CONTEXT, b"\0\0\0\0\0\0\0\0"),
        (4, b""),
    ] {
        let r = h.exchange(opt, data).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].kind, REP_ERR_UNSUP, "option {opt}");
    }
    // An unknown option too long to buffer is skipped unread, then refused.
    h.send_option(0x4242, &vec![7u8; 1 << 20]).unwrap();
    assert_eq!(h.read_reply().unwrap().kind, REP_ERR_UNSUP);
    h.send_option(OPT_GO, &vec![0u8; 100 << 10]).unwrap();
    assert_eq!(h.read_reply().unwrap().kind, REP_ERR_INVALID);
    let mut c = h.go("").unwrap().unwrap();
    c.read(0, 1).unwrap();
}

#[test]
fn malformed_info_gets_err_invalid() {
    let (server, _dev, _dir) = mem_server(pattern(SIZE, 9), "disk");
    let mut h = Handshake::start(server.addr(), 3).unwrap();
    let mut bad = Handshake::info_data("disk", &[1]);
    bad.push(0); // trailing byte
    let r = h.exchange(OPT_INFO, &bad).unwrap();
    assert_eq!(r[0].kind, REP_ERR_INVALID);
    let msg = String::from_utf8(r[0].data.clone()).unwrap();
    assert!(msg.contains("trailing"), "{msg}");
    let r = h.exchange(OPT_GO, &[0, 0, 0, 9, b'd']).unwrap();
    assert_eq!(r[0].kind, REP_ERR_INVALID);
    assert!(String::from_utf8_lossy(&r[0].data).contains("export name"));
    h.go("disk").unwrap().unwrap();
}

#[test]
fn abort_is_acknowledged_then_closed() {
    let (server, _dev, _dir) = mem_server(pattern(SIZE, 10), "disk");
    let mut h = Handshake::start(server.addr(), 3).unwrap();
    let r = h.exchange(OPT_ABORT, &[]).unwrap();
    assert_eq!(r[0].kind, REP_ACK);
    assert!(h.sock.closed_by_peer());
}

#[test]
fn protocol_violations_disconnect() {
    let (server, _dev, _dir) = mem_server(pattern(SIZE, 11), "disk");
    // Unknown client flag bits.
    let mut h = Handshake::start(server.addr(), 0x10).unwrap();
    assert!(h.sock.closed_by_peer());
    // Bad option magic.
    let mut h = Handshake::start(server.addr(), 3).unwrap();
    h.sock.write_all(b"IHAVEOPX\0\0\0\x07\0\0\0\0").unwrap();
    assert!(h.sock.closed_by_peer());
    // An export name longer than the protocol allows.
    let mut h = Handshake::start(server.addr(), 3).unwrap();
    h.send_option(OPT_EXPORT_NAME, &vec![b'a'; 5000]).unwrap();
    assert!(h.sock.closed_by_peer());
    // A huge option length for EXPORT_NAME: no reading 4 GiB, just close.
    let mut h = Handshake::start(server.addr(), 3).unwrap();
    h.sock
        .write_all(b"IHAVEOPT\0\0\0\x01\xff\xff\xff\xff")
        .unwrap();
    assert!(h.sock.closed_by_peer());
    // The server is still fine.
    connect(server.addr(), "disk").read(0, 8).unwrap();
}

#[test]
fn read_only_devices_are_advertised_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Arc::new(ReadOnly(MemDevice::from_vec(pattern(SIZE, 12))));
    let addr = NbdAddr::Unix(dir.path().join("ro.sock"));
    let server = NbdServer::start(dev, &addr, "ro").unwrap();
    let mut h = Handshake::start(server.addr(), 3).unwrap();
    let info = h.info(OPT_INFO, "ro", &[]).unwrap().unwrap();
    assert_eq!(
        info.flags,
        TF_HAS_FLAGS | TF_READ_ONLY | TF_FLUSH | TF_MULTI_CONN
    );
    let c = h.export_name("ro", true).unwrap();
    assert_eq!(c.flags & TF_READ_ONLY, TF_READ_ONLY);
}

#[test]
fn tcp_handshake_works_too() {
    let content = pattern(SIZE, 13);
    let (server, _dev) = mem_server_tcp(content.clone(), "disk");
    let NbdAddr::Tcp(hp) = server.addr() else {
        panic!()
    };
    assert!(hp.starts_with("127.0.0.1:") && !hp.ends_with(":0"), "{hp}");
    let mut c = connect(server.addr(), "disk");
    assert_eq!(c.read(SIZE as u64 - 10, 10).unwrap(), &content[SIZE - 10..]);
    // Raw greeting check over TCP.
    let mut s = std::net::TcpStream::connect(hp.as_str()).unwrap();
    let mut g = [0u8; 18];
    s.read_exact(&mut g).unwrap();
    assert_eq!(&g[..16], b"NBDMAGICIHAVEOPT");
}
