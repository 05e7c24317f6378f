//! No thread outlives its server: 16 servers (unix and TCP) with clients, shut down, and
//! the process is back to its thread count. Alone in its binary so that no other test's
//! threads come and go meanwhile.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use obd_core::MemDevice;
use obd_nbd::{NbdAddr, NbdServer};

fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn sixteen_servers_leave_no_threads_behind() {
    let dir = tempfile::tempdir().unwrap();
    let before = threads();
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for i in 0..16 {
        let addr = if i % 2 == 0 {
            NbdAddr::Unix(dir.path().join(format!("s{i}.sock")))
        } else {
            NbdAddr::Tcp("127.0.0.1:0".into())
        };
        let dev = Arc::new(MemDevice::from_vec(pattern(1 << 20, i)));
        let server = NbdServer::start(dev, &addr, "t").unwrap();
        // An active client, an idle one in transmission, one in the handshake.
        let mut c = connect(server.addr(), "t");
        c.write(4096, &[i as u8; 4096], 0).unwrap();
        assert_eq!(c.read(4096, 4096).unwrap(), vec![i as u8; 4096]);
        clients.push(connect(server.addr(), "t"));
        let h = Handshake::start(server.addr(), 3).unwrap();
        assert!(c.disc());
        servers.push((server, h));
    }
    let during = threads();
    eprintln!("threads: {before} before, {during} with 16 servers");
    assert!(during > before + 16, "servers run threads");
    for (server, _h) in servers {
        server.shutdown().unwrap();
    }
    // Joined threads are gone at once; allow the kernel a moment to update the count.
    let deadline = Instant::now() + Duration::from_secs(5);
    while threads() > before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(threads(), before, "threads leaked");
    for mut c in clients {
        assert!(c.sock.closed_by_peer());
    }
}
