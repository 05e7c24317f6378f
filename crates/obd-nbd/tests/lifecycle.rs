//! Server lifecycle: addresses, socket files, connection counting, shutdown with clients
//! connected, in-flight requests at shutdown.

mod common;

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::tools::wait_for;
use common::*;
use obd_core::{ErrorKind, MemDevice};
use obd_nbd::{NbdAddr, NbdServer};

const SIZE: usize = 1 << 20;

fn mem(size: usize) -> Arc<MemDevice> {
    Arc::new(MemDevice::from_vec(pattern(size, 1)))
}

#[test]
fn tcp_port_zero_is_resolved_and_freed_after_shutdown() {
    let server = NbdServer::start(mem(SIZE), &"tcp:127.0.0.1:0".parse().unwrap(), "t").unwrap();
    let NbdAddr::Tcp(hp) = server.addr().clone() else {
        panic!("tcp address expected")
    };
    let port: u16 = hp.rsplit_once(':').unwrap().1.parse().unwrap();
    assert_ne!(port, 0);
    assert_eq!(server.addr().to_string(), format!("tcp:127.0.0.1:{port}"));
    assert_eq!(server.name(), "t");
    connect(server.addr(), "t").read(0, 1).unwrap();
    server.shutdown().unwrap();
    assert!(
        std::net::TcpStream::connect(hp.as_str()).is_err(),
        "port still open"
    );
    // The same port can be bound again right away.
    let again = NbdServer::start(mem(SIZE), &NbdAddr::Tcp(hp.clone()), "t").unwrap();
    assert_eq!(again.addr(), &NbdAddr::Tcp(hp));
}

#[test]
fn unix_socket_file_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let addr = NbdAddr::Unix(path.clone());
    // A stale socket (nothing listening) is replaced.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = NbdServer::start(mem(SIZE), &addr, "u").unwrap();
    assert_eq!(server.addr(), &addr);
    connect(&addr, "u").read(0, 10).unwrap();
    // A live one is not.
    let e = NbdServer::start(mem(SIZE), &addr, "u2").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert!(e.to_string().contains("s.sock"), "{e}");
    connect(&addr, "u").read(0, 10).unwrap();
    server.shutdown().unwrap();
    assert!(!path.exists(), "socket file removed at shutdown");
    // A regular file is never deleted.
    std::fs::write(&path, b"precious").unwrap();
    let e = NbdServer::start(mem(SIZE), &addr, "u").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    // A directory that does not exist.
    let e = NbdServer::start(
        mem(SIZE),
        &NbdAddr::Unix(dir.path().join("no/such.sock")),
        "u",
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[test]
fn drop_cleans_up_like_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.sock");
    let probe = Arc::new(Probe::new(vec![0; SIZE]));
    let server = NbdServer::start(probe.clone(), &NbdAddr::Unix(path.clone()), "d").unwrap();
    let mut c = connect(server.addr(), "d");
    c.write(0, &[1; 100], 0).unwrap();
    drop(server);
    assert!(!path.exists());
    assert!(c.sock.closed_by_peer());
    assert_eq!(probe.flushes.load(Ordering::SeqCst), 1);
}

#[test]
fn bad_export_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let addr = NbdAddr::Unix(dir.path().join("n.sock"));
    for name in ["a\0b".to_string(), "x".repeat(5000)] {
        let e = NbdServer::start(mem(SIZE), &addr, &name).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
}

#[test]
fn connections_are_counted() {
    let (server, _dev, _dir) = mem_server(vec![0; SIZE], "c");
    assert_eq!(server.connections(), 0);
    let a = connect(server.addr(), "c");
    let b = Handshake::start(server.addr(), 3).unwrap(); // still in the handshake
    wait_for("2 connections", Duration::from_secs(5), || {
        server.connections() == 2
    });
    assert!(a.disc());
    wait_for("1 connection", Duration::from_secs(5), || {
        server.connections() == 1
    });
    drop(b);
    wait_for("0 connections", Duration::from_secs(5), || {
        server.connections() == 0
    });
}

#[test]
fn shutdown_does_not_hang_on_idle_clients() {
    let (server, _dev, _dir) = mem_server(vec![0; SIZE], "idle");
    let mut in_transmission = connect(server.addr(), "idle");
    in_transmission.read(0, 1).unwrap();
    let mut in_handshake = Handshake::start(server.addr(), 3).unwrap();
    let just_connected = Sock::connect(server.addr()).unwrap();
    wait_for("3 connections", Duration::from_secs(5), || {
        server.connections() == 3
    });
    let t = Instant::now();
    server.shutdown().unwrap();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    assert!(in_transmission.sock.closed_by_peer());
    assert!(in_handshake.sock.closed_by_peer());
    drop(just_connected);
}

#[test]
fn shutdown_finishes_in_flight_requests() {
    let probe = Arc::new(Probe {
        write_delay: Some(Duration::from_millis(100)),
        ..Probe::new(vec![0; SIZE])
    });
    let (server, _dir) = serve(probe.clone(), "busy");
    let mut c = connect(server.addr(), "busy");
    for i in 0..8u64 {
        c.send(CMD_WRITE, 0, i * 4096, 4096, &[i as u8 + 1; 4096]);
    }
    wait_for("the first write to start", Duration::from_secs(5), || {
        probe.writes_started.load(Ordering::SeqCst) > 0
    });
    let stopper = std::thread::spawn(move || server.shutdown());
    // Every request sent before the shutdown is carried out and answered.
    for _ in 0..8 {
        let (_, err, _) = c.recv().unwrap();
        assert_eq!(err, 0);
    }
    assert!(c.sock.closed_by_peer());
    stopper.join().unwrap().unwrap();
    assert_eq!(probe.writes.load(Ordering::SeqCst), 8);
    let v = probe.inner.to_vec();
    for i in 0..8usize {
        assert!(v[i * 4096..][..4096].iter().all(|&b| b == i as u8 + 1));
    }
    assert!(
        probe.flushes.load(Ordering::SeqCst) >= 1,
        "shutdown flushes"
    );
}

#[test]
fn shutdown_cuts_a_client_that_never_reads_its_replies() {
    let (server, _dev, _dir) = mem_server(pattern(8 << 20, 2), "stuck");
    let c = connect(server.addr(), "stuck");
    // Flood reads without ever reading a reply, until the socket is full.
    let mut sock = c.sender();
    let flood = std::thread::spawn(move || {
        let req = Client::request_bytes(CMD_READ, 0, 1, 0, 8 << 20, &[]);
        while sock.write_all(&req).is_ok() {}
    });
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    server.shutdown().unwrap();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(20), "shutdown took {took:?}");
    eprintln!("shutdown with a stuck client took {took:?}");
    drop(c);
    flood.join().unwrap();
}

#[test]
fn option_during_shutdown_gets_err_shutdown_or_a_close() {
    // A client mid-handshake when shutdown starts: the server may answer ERR_SHUTDOWN or
    // simply close; either way the client learns and shutdown completes.
    let (server, _dev, _dir) = mem_server(vec![0; SIZE], "s");
    let mut h = Handshake::start(server.addr(), 3).unwrap();
    wait_for("connection", Duration::from_secs(5), || {
        server.connections() == 1
    });
    let stopper = std::thread::spawn(move || server.shutdown());
    std::thread::sleep(Duration::from_millis(100));
    if let Ok(r) = h.exchange(OPT_LIST, &[]) {
        assert_eq!(r[0].kind, REP_ERR_SHUTDOWN);
    }
    stopper.join().unwrap().unwrap();
}

#[test]
fn shutdown_reports_a_failing_flush() {
    let probe = Arc::new(Probe {
        fail_flush: Some(5), // EIO
        ..Probe::new(vec![0; SIZE])
    });
    let (server, _dir) = serve(probe, "ff");
    let e = server.shutdown().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.to_string().contains("ff"), "{e}");
}
