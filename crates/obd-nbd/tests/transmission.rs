//! Transmission phase: commands against a model, the device conformance suites end to end,
//! errors, pipelining and multiple connections.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use obd_core::{FileDevice, MemDevice, ReadAt, ReadOnly};
use obd_nbd::{NbdAddr, NbdServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SIZE: usize = 4 << 20;

/// Random unaligned commands through `c`, checked against `model` as they go.
fn run_model_ops(c: &mut Client, model: &mut [u8], ops: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let size = model.len() as u64;
    for step in 0..ops {
        let off = rng.random_range(0..size);
        let len = rng.random_range(0..=(size - off).min(300_000)) as u32;
        let (o, l) = (off as usize, len as usize);
        let fua = if rng.random_bool(0.2) { FLAG_FUA } else { 0 };
        match rng.random_range(0..12) {
            0..=3 => {
                let data = pattern(l, rng.random());
                c.write(off, &data, fua).unwrap();
                model[o..o + l].copy_from_slice(&data);
            }
            4 => {
                c.trim(off, len, fua).unwrap();
                model[o..o + l].fill(0);
            }
            5 => {
                c.write_zeroes(off, len, fua).unwrap();
                model[o..o + l].fill(0);
            }
            6 => {
                c.write_zeroes(off, len, FLAG_NO_HOLE | fua).unwrap();
                model[o..o + l].fill(0);
            }
            7 => c.flush().unwrap(),
            _ => {
                let got = c.read(off, len).unwrap();
                assert!(got == model[o..o + l], "step {step}: read {len} at {off}");
            }
        }
    }
    assert!(c.read(0, size as u32).unwrap() == model, "whole export");
}

#[test]
fn commands_match_a_model_on_a_memory_device() {
    let mut model = pattern(SIZE, 1);
    let (server, dev, _dir) = mem_server(model.clone(), "mem");
    let mut c = connect(server.addr(), "mem");
    run_model_ops(&mut c, &mut model, 400, 1);
    assert!(c.disc());
    assert!(dev.to_vec() == model);
    server.shutdown().unwrap();
}

#[test]
fn commands_match_a_model_on_a_file_device_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let mut model = pattern(SIZE, 2);
    std::fs::write(&path, &model).unwrap();
    let dev = Arc::new(FileDevice::open_rw(&path).unwrap());
    let addr = NbdAddr::Tcp("127.0.0.1:0".into());
    let server = NbdServer::start(dev, &addr, "file").unwrap();
    let mut c = connect(server.addr(), "file");
    run_model_ops(&mut c, &mut model, 300, 2);
    drop(c);
    server.shutdown().unwrap();
    assert!(
        std::fs::read(&path).unwrap() == model,
        "file content after shutdown"
    );
}

#[test]
fn conformance_suites_pass_through_the_export() {
    let content = pattern(SIZE, 3);
    let (server, dev, _dir) = mem_server(content.clone(), "conf");
    let remote = RemoteDevice::connect(server.addr(), "conf", 4);
    obd_core::testing::check_read_at(&remote, &content, 1, 3);
    obd_core::testing::check_read_at(&remote, &content, 512, 4);
    obd_core::testing::check_concurrent_reads(&remote, &content, 512);
    obd_core::testing::check_block_device(&remote, 1, 300, 5);
    obd_core::testing::check_block_device(&remote, 4096, 200, 6);
    let final_content = remote.read_vec(0, SIZE).unwrap();
    assert!(dev.to_vec() == final_content);
}

#[test]
fn out_of_range_and_bad_requests_get_errors_and_the_connection_survives() {
    let content = pattern(SIZE, 4);
    let (server, dev, _dir) = mem_server(content.clone(), "e");
    let mut c = connect(server.addr(), "e");
    let end = SIZE as u64;
    assert_eq!(c.read(end, 1), Err(EINVAL));
    assert_eq!(c.read(end - 1, 2), Err(EINVAL));
    assert_eq!(c.read(u64::MAX, 1), Err(EINVAL));
    assert_eq!(c.read(end, 0), Ok(vec![]));
    assert_eq!(c.write(end - 1, &[1, 2], 0), Err(ENOSPC));
    assert_eq!(c.write(u64::MAX - 1, &[1, 2, 3], 0), Err(ENOSPC));
    assert_eq!(c.trim(end - 1, 2, 0), Err(EINVAL));
    assert_eq!(c.write_zeroes(end, 1, 0), Err(ENOSPC));
    // A read over the 32 MiB limit: refused without allocating, connection goes on.
    assert_eq!(c.read(0, 32 << 20 | 1), Err(EINVAL));
    assert_eq!(c.read(0, u32::MAX), Err(EINVAL));
    // Unknown command, and commands the server did not advertise.
    for cmd in [5u16, 7, 99] {
        let k = c.send(cmd, 0, 0, 16, &[]);
        assert_eq!(c.recv().unwrap(), (k, EINVAL, vec![]));
    }
    // Flags not valid for the command: EINVAL, and a write's payload is skipped.
    assert_eq!(c.write(0, &[9; 100], FLAG_NO_HOLE), Err(EINVAL));
    assert_eq!(c.write(0, &[9; 100], 0x8000), Err(EINVAL));
    assert_eq!(c.read(0, 10), Ok(content[..10].to_vec()));
    let k = c.send(CMD_READ, 4 /* DF */, 0, 10, &[]);
    assert_eq!(c.recv().unwrap(), (k, EINVAL, vec![]));
    // Zero-length commands are fine.
    c.write(5, &[], 0).unwrap();
    c.trim(5, 0, 0).unwrap();
    c.write_zeroes(5, 0, 0).unwrap();
    // Nothing above changed the device.
    assert!(dev.to_vec() == content);
    assert!(c.disc());
}

#[test]
fn oversized_write_disconnects_without_reading_it() {
    let (server, _dev, _dir) = mem_server(pattern(SIZE, 5), "big");
    let mut c = connect(server.addr(), "big");
    c.send_raw(CMD_WRITE, 0, 1, 0, u32::MAX, &[]);
    assert!(c.sock.closed_by_peer());
    // Others are unaffected.
    connect(server.addr(), "big").read(0, 1).unwrap();
}

#[test]
fn read_only_export_refuses_writes_with_eperm() {
    let content = pattern(SIZE, 6);
    let dev = Arc::new(ReadOnly(MemDevice::from_vec(content.clone())));
    let (server, _dir) = serve(dev.clone(), "ro");
    let mut c = connect(server.addr(), "ro");
    assert_eq!(c.write(0, &[1; 4096], 0), Err(EPERM));
    assert_eq!(c.write(SIZE as u64, &[1; 10], 0), Err(EPERM));
    assert_eq!(c.trim(0, 4096, 0), Err(EPERM));
    assert_eq!(c.write_zeroes(0, 4096, FLAG_NO_HOLE), Err(EPERM));
    c.flush().unwrap();
    assert_eq!(c.read(0, 4096).unwrap(), &content[..4096]);
    assert!(dev.0.to_vec() == content);
    // A writable device that is read-only only underneath (e.g. FileDevice opened
    // read-only) reports EPERM from the device error too.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.img");
    std::fs::write(&path, &content).unwrap();
    let fdev = Arc::new(FileDevice::open(&path).unwrap());
    let (server2, _d2) = serve(fdev, "f");
    let mut c = connect(server2.addr(), "f");
    assert_eq!(c.flags & TF_READ_ONLY, TF_READ_ONLY);
    assert_eq!(c.write(0, &[1; 10], 0), Err(EPERM));
}

#[test]
fn fua_flushes_and_write_zeroes_discards_unless_no_hole() {
    let probe = Arc::new(Probe::new(pattern(SIZE, 7)));
    let (server, _dir) = serve(probe.clone(), "p");
    let mut c = connect(server.addr(), "p");
    let flushes = || probe.flushes.load(Ordering::SeqCst);
    c.write(0, &[1; 512], 0).unwrap();
    assert_eq!(flushes(), 0);
    c.write(0, &[1; 512], FLAG_FUA).unwrap();
    assert_eq!(flushes(), 1);
    c.trim(0, 512, FLAG_FUA).unwrap();
    assert_eq!(flushes(), 2);
    c.flush().unwrap();
    assert_eq!(flushes(), 3);
    // WRITE_ZEROES: a discard when holes are allowed ...
    let (d0, w0) = (
        probe.discards.load(Ordering::SeqCst),
        probe.writes.load(Ordering::SeqCst),
    );
    c.write_zeroes(4096, 3 << 20, 0).unwrap();
    assert_eq!(probe.discards.load(Ordering::SeqCst), d0 + 1);
    assert_eq!(probe.writes.load(Ordering::SeqCst), w0);
    // ... real zeros (in 1 MiB chunks) with NO_HOLE.
    c.write(4096, &[7; 4096], 0).unwrap();
    c.write_zeroes(4096, 3 << 20, FLAG_NO_HOLE | FLAG_FUA)
        .unwrap();
    assert_eq!(probe.discards.load(Ordering::SeqCst), d0 + 1);
    assert_eq!(probe.writes.load(Ordering::SeqCst), w0 + 1 + 3);
    assert_eq!(flushes(), 4);
    assert!(c.read(4096, 3 << 20).unwrap().iter().all(|&b| b == 0));
    // Shutdown flushes the device once more.
    drop(c);
    server.shutdown().unwrap();
    assert_eq!(flushes(), 5);
}

#[test]
fn devices_that_cannot_discard() {
    let content = pattern(SIZE, 8);
    let probe = Arc::new(Probe {
        discard_unsupported: true,
        ..Probe::new(content.clone())
    });
    let (server, _dir) = serve(probe.clone(), "nd");
    let mut c = connect(server.addr(), "nd");
    // Trim is a hint: accepted and ignored.
    c.trim(0, 4096, 0).unwrap();
    assert_eq!(c.read(0, 4096).unwrap(), &content[..4096]);
    // Write zeroes falls back to writing zeros.
    c.write_zeroes(100, 5000, 0).unwrap();
    assert!(c.read(100, 5000).unwrap().iter().all(|&b| b == 0));
    assert_eq!(c.read(0, 100).unwrap(), &content[..100]);
}

#[test]
fn pipelined_requests_are_all_answered_by_cookie() {
    let mut model = pattern(SIZE, 9);
    let (server, dev, _dir) = mem_server(model.clone(), "pipe");
    let mut c = connect(server.addr(), "pipe");
    let mut rng = StdRng::seed_from_u64(9);
    // 256 writes to distinct 8 KiB slots, then 512 reads of random ranges and a flush, all
    // sent by a second thread in one go while this one collects the replies.
    let mut expected: HashMap<u64, Option<Vec<u8>>> = HashMap::new();
    let mut wire = Vec::new();
    let mut slots: Vec<u64> = (0..(SIZE as u64 / 8192)).collect();
    for i in (1..slots.len()).rev() {
        slots.swap(i, rng.random_range(0..=i));
    }
    let mut cookie = 1u64 << 40;
    for &slot in slots.iter().take(256) {
        let data = pattern(8192, slot);
        cookie += 1;
        wire.extend(Client::request_bytes(
            CMD_WRITE,
            0,
            cookie,
            slot * 8192,
            8192,
            &data,
        ));
        c.expect(CMD_WRITE, cookie, 8192);
        model[(slot * 8192) as usize..][..8192].copy_from_slice(&data);
        expected.insert(cookie, None);
    }
    let writes_done = model.clone();
    for _ in 0..512 {
        let off = rng.random_range(0..SIZE as u64 - 70_000);
        let len = rng.random_range(1..70_000u32);
        cookie += 1;
        wire.extend(Client::request_bytes(CMD_READ, 0, cookie, off, len, &[]));
        c.expect(CMD_READ, cookie, len);
        expected.insert(cookie, Some(Vec::new()));
    }
    cookie += 1;
    wire.extend(Client::request_bytes(CMD_FLUSH, 0, cookie, 0, 0, &[]));
    c.expect(CMD_FLUSH, cookie, 0);
    expected.insert(cookie, None);

    // Reads may run before earlier writes finish (the protocol lets a server reorder), so
    // writes go first and reads are only checked once every write is answered.
    let mut sender = c.sender();
    let (write_part, read_part) = wire.split_at(256 * (28 + 8192));
    std::thread::scope(|s| {
        s.spawn(|| std::io::Write::write_all(&mut sender, write_part).unwrap());
        for _ in 0..256 {
            let (k, err, _) = c.recv().unwrap();
            assert_eq!(err, 0);
            assert_eq!(expected.remove(&k), Some(None));
        }
    });
    assert!(dev.to_vec() == writes_done);
    let mut reads = HashMap::new();
    std::thread::scope(|s| {
        s.spawn(|| std::io::Write::write_all(&mut sender, read_part).unwrap());
        while c.in_flight() > 0 {
            let (k, err, data) = c.recv().unwrap();
            assert_eq!(err, 0);
            assert!(expected.remove(&k).is_some(), "cookie {k:#x}");
            reads.insert(k, data);
        }
    });
    assert!(expected.is_empty());
    // Check every read against the model, by decoding what was sent.
    for req in read_part.chunks(28).take(512) {
        let k = u64::from_be_bytes(req[8..16].try_into().unwrap());
        let off = u64::from_be_bytes(req[16..24].try_into().unwrap()) as usize;
        let len = u32::from_be_bytes(req[24..28].try_into().unwrap()) as usize;
        assert!(reads[&k] == model[off..off + len], "read {len} at {off}");
    }
    assert!(dev.to_vec() == model);
}

#[test]
fn slow_requests_do_not_hold_up_later_ones() {
    let content = pattern(SIZE, 10);
    let probe = Arc::new(Probe {
        slow_reads: Some((0, Duration::from_millis(500))),
        ..Probe::new(content.clone())
    });
    let (server, _dir) = serve(probe, "slow");
    let mut c = connect(server.addr(), "slow");
    let slow = c.send(CMD_READ, 0, 0, 4096, &[]);
    let fast = c.send(CMD_READ, 0, 8192, 4096, &[]);
    let (first, e1, d1) = c.recv().unwrap();
    let (second, e2, d2) = c.recv().unwrap();
    assert_eq!((e1, e2), (0, 0));
    assert_eq!(
        (first, second),
        (fast, slow),
        "the fast read is answered first"
    );
    assert_eq!(d1, &content[8192..12288]);
    assert_eq!(d2, &content[..4096]);
}

#[test]
fn disc_answers_what_was_sent_before_it() {
    let (server, dev, _dir) = mem_server(vec![0; SIZE], "d");
    let mut c = connect(server.addr(), "d");
    let mut cookies = Vec::new();
    for i in 0..32u64 {
        cookies.push(c.send(CMD_WRITE, 0, i * 4096, 4096, &[i as u8 + 1; 4096]));
    }
    c.send_raw(CMD_DISC, 0, 0, 0, 0, &[]);
    for _ in 0..32 {
        let (_, err, _) = c.recv().unwrap();
        assert_eq!(err, 0);
    }
    assert!(c.sock.closed_by_peer());
    let v = dev.to_vec();
    for i in 0..32usize {
        assert!(v[i * 4096..][..4096].iter().all(|&b| b == i as u8 + 1));
    }
}

#[test]
fn many_connections_at_once() {
    let (server, dev) = mem_server_tcp(vec![0; SIZE], "multi");
    let addr = server.addr().clone();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let addr = addr.clone();
            s.spawn(move || {
                let mut c = connect(&addr, "multi");
                let base = t * (SIZE as u64 / 8);
                for i in 0..64u64 {
                    let data = pattern(4096, t * 1000 + i);
                    c.write(base + i * 4096, &data, 0).unwrap();
                }
                c.flush().unwrap();
                for i in 0..64u64 {
                    let data = pattern(4096, t * 1000 + i);
                    assert_eq!(c.read(base + i * 4096, 4096).unwrap(), data);
                }
                assert!(c.disc());
            });
        }
    });
    let v = dev.to_vec();
    for t in 0..8usize {
        for i in 0..64usize {
            let off = t * (SIZE / 8) + i * 4096;
            assert!(v[off..off + 4096] == pattern(4096, (t * 1000 + i) as u64)[..]);
        }
    }
}
