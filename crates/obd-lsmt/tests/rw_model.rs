//! Model test of the writable device: random writes, discards, flushes, reopens (clean and
//! crash), commits (and seals) followed by restacking, and merges of the lower stack, checked
//! after every step against a plain byte vector.
//!
//! Modelled upstream semantics:
//! - append-only upper: a crash (no flush, no close) loses exactly what came after the last
//!   flush; a clean reopen loses nothing;
//! - sparse upper: data survives any reopen (it is written in place), but discarded ranges
//!   become holes again and show the lower device (the upper uses 4 KiB-aligned I/O, the
//!   file system's block size, so its extents are exact).

mod rw_common;

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use obd_core::{BlockDevice, FileDevice, ReadAt};
use obd_lsmt::{
    AppendLayer, CommitMeta, CreateOptions, LayerStack, SparseLayer, StackDevice, WritableLayer,
    merge_stack_to_file,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

const VSIZE: u64 = 512 << 10;
const SECTOR: usize = 512;

#[derive(Debug, Clone)]
enum Op {
    Write { unit: u16, units: u8, seed: u32 },
    Discard { unit: u16, units: u8 },
    Flush,
    Reopen { crash: bool },
    Commit { seal: bool, next_sparse: bool },
    Merge,
    Read { off: u32, len: u16 },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<u16>(), 0u8..40, any::<u32>())
            .prop_map(|(unit, units, seed)| Op::Write { unit, units, seed }),
        3 => (any::<u16>(), 0u8..40).prop_map(|(unit, units)| Op::Discard { unit, units }),
        2 => Just(Op::Flush),
        2 => any::<bool>().prop_map(|crash| Op::Reopen { crash }),
        2 => (any::<bool>(), any::<bool>())
            .prop_map(|(seal, next_sparse)| Op::Commit { seal, next_sparse }),
        1 => Just(Op::Merge),
        3 => (any::<u32>(), any::<u16>()).prop_map(|(off, len)| Op::Read { off, len }),
    ]
}

fn payload(seed: u32, len: usize) -> Vec<u8> {
    let mut x = u64::from(seed) | 1 << 40;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A scratch directory, on tmpfs when there is one: the model test does thousands of
/// fsyncs, which cost nothing there (the other `rw_*` tests run on the default temp dir).
fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

struct Harness {
    dir: tempfile::TempDir,
    files: usize,
    lowers: Vec<PathBuf>,
    lower: Option<Arc<dyn ReadAt>>,
    sparse: bool,
    upper_paths: (PathBuf, PathBuf),
    upper: Option<Arc<dyn WritableLayer>>,
    dev: Option<StackDevice>,
    /// The device as it must read now.
    model: Vec<u8>,
    /// The lower device (what the current upper sits on).
    lower_model: Vec<u8>,
    /// The device as of the last flush (what an append upper keeps after a crash).
    flushed_model: Vec<u8>,
    /// Sectors whose latest upper operation was a discard.
    discarded: Vec<bool>,
}

impl Harness {
    fn new(sparse: bool) -> Self {
        let mut h = Harness {
            dir: scratch_dir(),
            files: 0,
            lowers: Vec::new(),
            lower: None,
            sparse,
            upper_paths: (PathBuf::new(), PathBuf::new()),
            upper: None,
            dev: None,
            model: vec![0; VSIZE as usize],
            lower_model: vec![0; VSIZE as usize],
            flushed_model: vec![0; VSIZE as usize],
            discarded: vec![false; VSIZE as usize / SECTOR],
        };
        h.new_upper(sparse);
        h
    }

    fn path(&mut self, what: &str) -> PathBuf {
        self.files += 1;
        self.dir.path().join(format!("{}.{what}", self.files))
    }

    fn dev(&self) -> &StackDevice {
        self.dev.as_ref().unwrap()
    }

    fn upper(&self) -> &Arc<dyn WritableLayer> {
        self.upper.as_ref().unwrap()
    }

    fn align(&self) -> u64 {
        if self.sparse { 4096 } else { 512 }
    }

    fn set_upper(&mut self, upper: Arc<dyn WritableLayer>) {
        self.dev = Some(StackDevice::new(self.lower.clone(), upper.clone()));
        self.upper = Some(upper);
    }

    fn new_upper(&mut self, sparse: bool) {
        let (d, i) = (self.path("data"), self.path("index"));
        let opts = CreateOptions::default();
        let upper: Arc<dyn WritableLayer> = if sparse {
            Arc::new(SparseLayer::create(&d, &i, VSIZE, opts).unwrap())
        } else {
            Arc::new(AppendLayer::create(&d, &i, VSIZE, opts).unwrap())
        };
        self.sparse = sparse;
        self.upper_paths = (d, i);
        self.lower_model = self.model.clone();
        self.flushed_model = self.model.clone();
        self.discarded.fill(false);
        self.set_upper(upper);
    }

    fn reopen(&mut self, crash: bool) {
        if crash && !self.sparse {
            // The process dies: its files stay as the kernel has them now, nothing is flushed
            // or closed. Snapshot them and reopen the snapshot; the live layer is dropped.
            // (A sparse layer keeps nothing in memory that a close would write.)
            let (d, i) = (self.path("data"), self.path("index"));
            std::fs::copy(&self.upper_paths.0, &d).unwrap();
            std::fs::copy(&self.upper_paths.1, &i).unwrap();
            self.upper_paths = (d, i);
        }
        self.dev = None;
        self.upper = None;
        let (d, i) = self.upper_paths.clone();
        let upper: Arc<dyn WritableLayer> = if self.sparse {
            Arc::new(SparseLayer::open(&d).unwrap())
        } else {
            Arc::new(AppendLayer::open(&d, &i).unwrap())
        };
        if self.sparse {
            for (s, d) in self.discarded.iter().enumerate() {
                if *d {
                    let r = s * SECTOR..(s + 1) * SECTOR;
                    self.model[r.clone()].copy_from_slice(&self.lower_model[r]);
                }
            }
        } else if crash {
            self.model = self.flushed_model.clone();
        }
        self.flushed_model = self.model.clone();
        self.discarded.fill(false);
        self.set_upper(upper);
    }

    fn restack(&mut self) {
        let srcs: Vec<Arc<dyn ReadAt>> = self
            .lowers
            .iter()
            .map(|p| Arc::new(FileDevice::open(p).unwrap()) as Arc<dyn ReadAt>)
            .collect();
        self.lower = Some(Arc::new(LayerStack::open(srcs).unwrap()));
    }

    fn commit(&mut self, seal: bool, next_sparse: bool) {
        let upper = self.upper.take().unwrap();
        self.dev = None;
        let layer = if seal && !self.sparse {
            drop(upper);
            let (d, i) = self.upper_paths.clone();
            obd_lsmt::seal_in_place(&d, &i).unwrap();
            d
        } else {
            let out = self.path("lsmt");
            let f = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&out)
                .unwrap();
            upper.commit_to_file(&f, &CommitMeta::default()).unwrap();
            out
        };
        self.lowers.push(layer);
        self.restack();
        self.new_upper(next_sparse);
    }

    fn merge(&mut self) {
        if self.lowers.len() < 2 {
            return;
        }
        let stack = self.lower.as_ref().unwrap();
        assert_eq!(stack.size(), VSIZE);
        let srcs: Vec<Arc<dyn ReadAt>> = self
            .lowers
            .iter()
            .map(|p| Arc::new(FileDevice::open(p).unwrap()) as Arc<dyn ReadAt>)
            .collect();
        let stack = LayerStack::open(srcs).unwrap();
        let out = self.path("merged");
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&out)
            .unwrap();
        merge_stack_to_file(&stack, &f, &CommitMeta::default()).unwrap();
        self.lowers = vec![out];
        self.restack();
        let upper = self.upper.take().unwrap();
        self.set_upper(upper);
    }

    fn span(&self, unit: u16, units: u8) -> (u64, u64) {
        let a = self.align();
        let n = VSIZE / a;
        let start = u64::from(unit) % n;
        let len = (u64::from(units) + 1).min(n - start);
        (start * a, len * a)
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Write { unit, units, seed } => {
                let (off, len) = self.span(unit, units);
                let data = payload(seed, len as usize);
                self.dev().write_at(&data, off).unwrap();
                self.model[off as usize..(off + len) as usize].copy_from_slice(&data);
                self.discarded[off as usize / SECTOR..(off + len) as usize / SECTOR].fill(false);
            }
            Op::Discard { unit, units } => {
                let (off, len) = self.span(unit, units);
                self.dev().discard(off, len).unwrap();
                self.model[off as usize..(off + len) as usize].fill(0);
                self.discarded[off as usize / SECTOR..(off + len) as usize / SECTOR].fill(true);
            }
            Op::Flush => {
                self.dev().flush().unwrap();
                self.flushed_model = self.model.clone();
            }
            Op::Reopen { crash } => self.reopen(crash),
            Op::Commit { seal, next_sparse } => self.commit(seal, next_sparse),
            Op::Merge => self.merge(),
            Op::Read { off, len } => {
                let off = u64::from(off) % VSIZE;
                let len = u64::from(len).min(VSIZE - off) as usize;
                let got = self.dev().read_vec(off, len).unwrap();
                assert!(
                    got == self.model[off as usize..off as usize + len],
                    "read {len} at {off}"
                );
            }
        }
    }

    fn check_all(&self, what: &str) {
        let got = self.dev().read_vec(0, VSIZE as usize).unwrap();
        if got != self.model {
            let i = got
                .iter()
                .zip(&self.model)
                .position(|(a, b)| a != b)
                .unwrap();
            panic!("after {what}: device differs from the model at byte {i}");
        }
        assert_eq!(self.upper().size(), VSIZE);
    }
}

fn run(sparse: bool, ops: &[Op]) {
    let mut h = Harness::new(sparse);
    for (k, op) in ops.iter().enumerate() {
        h.step(op);
        h.check_all(&format!("step {k} {op:?}"));
    }
    // Finally everything still commits to a layer that reads the same device.
    h.commit(false, false);
    h.check_all("final commit");
}

#[test]
fn model_proptest() {
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    });
    let strategy = (any::<bool>(), prop::collection::vec(op_strategy(), 1..80));
    runner
        .run(&strategy, |(sparse, ops)| {
            run(sparse, &ops);
            Ok(())
        })
        .unwrap();
}

/// Long deterministic sequences, to reach deep stacks and long histories.
#[test]
fn model_long_runs() {
    let mut runner = TestRunner::deterministic();
    for sparse in [false, true] {
        let ops = prop::collection::vec(op_strategy(), 800..801)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        run(sparse, &ops);
    }
}
