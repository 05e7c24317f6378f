//! Device errors become NBD error replies with the right errno, the connection stays in
//! sync, and each failure is logged with the export, the offset and the cause.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::*;

/// Everything logged at WARN and above, by any thread of this test binary.
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_log() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(|| Capture)
            .init();
    });
}

fn log_lines_with(needle: &str) -> Vec<String> {
    String::from_utf8_lossy(&LOG.lock().unwrap())
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

const SIZE: usize = 1 << 20;
const ENOSPC_OS: i32 = 28;
const EIO_OS: i32 = 5;
const EDQUOT_OS: i32 = 122;
const EACCES_OS: i32 = 13;

#[test]
fn device_errors_map_to_nbd_errnos_and_are_logged() {
    init_log();
    let content = pattern(SIZE, 1);
    let probe = Arc::new(Probe {
        fail_reads: Some((100_000, 100_001, EIO_OS)),
        fail_writes: Some((200_000, 300_000, ENOSPC_OS)),
        ..Probe::new(content.clone())
    });
    let (server, _dir) = serve(probe.clone(), "faulty-export");
    let mut c = connect(server.addr(), "faulty-export");
    // A failed read sends no data: the next reply must still parse.
    assert_eq!(c.read(99_000, 4096), Err(EIO));
    assert_eq!(c.read(0, 4096).unwrap(), &content[..4096]);
    assert_eq!(c.write(250_000, &[1; 512], 0), Err(ENOSPC));
    assert_eq!(c.write_zeroes(250_000, 512, FLAG_NO_HOLE), Err(ENOSPC));
    c.write(0, &[1; 512], 0).unwrap();
    assert!(c.disc());

    let lines = log_lines_with("faulty-export");
    eprintln!("{}", lines.join("\n"));
    assert!(lines.len() >= 3, "{lines:#?}");
    let read_line = lines
        .iter()
        .find(|l| l.contains("Read"))
        .expect("read failure logged");
    assert!(read_line.contains("WARN"), "{read_line}");
    assert!(read_line.contains("offset=99000"), "{read_line}");
    assert!(read_line.contains("probe read"), "cause: {read_line}");
    let write_line = lines
        .iter()
        .find(|l| l.contains("Write "))
        .expect("write failure logged");
    assert!(write_line.contains("offset=250000"), "{write_line}");
    assert!(
        write_line.to_lowercase().contains("no space"),
        "cause: {write_line}"
    );
}

#[test]
fn other_errnos() {
    init_log();
    for (os, nbd) in [
        (EDQUOT_OS, ENOSPC),
        (EACCES_OS, EPERM),
        (2 /* ENOENT */, EIO),
    ] {
        let probe = Arc::new(Probe {
            fail_writes: Some((0, 1, os)),
            fail_flush: Some(os),
            ..Probe::new(vec![0; SIZE])
        });
        let (server, _dir) = serve(probe, "errno-export");
        let mut c = connect(server.addr(), "errno-export");
        assert_eq!(c.write(0, &[1; 10], 0), Err(nbd), "os errno {os}");
        assert_eq!(c.flush(), Err(nbd), "flush, os errno {os}");
        // FUA: the write succeeds but the flush after it fails, so the write fails.
        assert_eq!(c.write(4096, &[1; 10], FLAG_FUA), Err(nbd));
        drop(c);
        assert!(server.shutdown().is_err(), "the final flush fails too");
    }
    assert!(!log_lines_with("errno-export").is_empty());
}
