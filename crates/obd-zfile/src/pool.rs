//! Worker threads that compress runs of blocks, for the writer.
//!
//! Jobs carry a sequence number; results come back in any order and the writer reorders
//! them, so the output does not depend on the number of threads.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use obd_core::{Error, Result};

use crate::codec::{BlockCompressor, block_bound};
use crate::layout::Algorithm;

/// Compressed output of a run of blocks.
pub(crate) struct Done {
    pub(crate) seq: u64,
    /// The input buffer, handed back for reuse.
    pub(crate) input: Vec<u8>,
    /// Stored blocks (CRCs included), packed; `used` bytes are valid.
    pub(crate) output: Vec<u8>,
    pub(crate) used: usize,
    /// Stored length of each block.
    pub(crate) lens: Vec<u32>,
    pub(crate) result: Result<()>,
}

struct Job {
    seq: u64,
    input: Vec<u8>,
    len: usize,
    output: Vec<u8>,
    lens: Vec<u32>,
}

/// Compress the first `len` bytes of `input` block by block into `output`.
pub(crate) fn compress_run(
    c: &mut BlockCompressor,
    algo: Algorithm,
    block_size: usize,
    input: &[u8],
    output: &mut Vec<u8>,
    lens: &mut Vec<u32>,
) -> Result<usize> {
    lens.clear();
    let bound = block_bound(algo, block_size);
    let need = input.len().div_ceil(block_size) * bound;
    if output.len() < need {
        output.resize(need, 0);
    }
    let mut pos = 0;
    for block in input.chunks(block_size) {
        let n = c.compress(block, &mut output[pos..pos + bound])?;
        let n32 = u32::try_from(n)
            .map_err(|_| Error::invalid_input(format!("compressed block of {n} bytes")))?;
        lens.push(n32);
        pos += n;
    }
    Ok(pos)
}

/// A fixed set of compression threads.
pub(crate) struct Pool {
    senders: Vec<Sender<Job>>,
    results: Receiver<Done>,
    handles: Vec<JoinHandle<()>>,
    next_seq: u64,
    next_out: u64,
    ready: BTreeMap<u64, Done>,
    free_out: Vec<(Vec<u8>, Vec<u32>)>,
}

impl Pool {
    pub(crate) fn new(
        threads: usize,
        algo: Algorithm,
        crc: bool,
        block_size: usize,
    ) -> Result<Pool> {
        let (done_tx, results) = channel::<Done>();
        let mut senders = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            let (tx, rx) = channel::<Job>();
            let done_tx = done_tx.clone();
            let mut comp = BlockCompressor::new(algo, crc)?;
            let h = std::thread::Builder::new()
                .name(format!("zfile-compress-{t}"))
                .spawn(move || {
                    while let Ok(mut job) = rx.recv() {
                        let r = compress_run(
                            &mut comp,
                            algo,
                            block_size,
                            &job.input[..job.len],
                            &mut job.output,
                            &mut job.lens,
                        );
                        let (used, result) = match r {
                            Ok(n) => (n, Ok(())),
                            Err(e) => (0, Err(e)),
                        };
                        let done = Done {
                            seq: job.seq,
                            input: job.input,
                            output: job.output,
                            used,
                            lens: job.lens,
                            result,
                        };
                        if done_tx.send(done).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| Error::io("spawn compression thread", e))?;
            senders.push(tx);
            handles.push(h);
        }
        Ok(Pool {
            senders,
            results,
            handles,
            next_seq: 0,
            next_out: 0,
            ready: BTreeMap::new(),
            free_out: Vec::new(),
        })
    }

    /// Jobs submitted and not yet returned by [`next_done`](Self::next_done).
    pub(crate) fn in_flight(&self) -> u64 {
        self.next_seq - self.next_out
    }

    pub(crate) fn threads(&self) -> usize {
        self.senders.len()
    }

    /// Queue the first `len` bytes of `input` for compression.
    pub(crate) fn submit(&mut self, input: Vec<u8>, len: usize) -> Result<()> {
        let (output, lens) = self.free_out.pop().unwrap_or_default();
        let seq = self.next_seq;
        let idx = (seq % self.senders.len() as u64) as usize;
        let job = Job {
            seq,
            input,
            len,
            output,
            lens,
        };
        self.senders[idx]
            .send(job)
            .map_err(|_| Error::io("compress", std::io::Error::other("compression thread died")))?;
        self.next_seq += 1;
        Ok(())
    }

    /// The next result in submission order, waiting for it if needed.
    pub(crate) fn next_done(&mut self) -> Result<Done> {
        loop {
            if let Some(d) = self.ready.remove(&self.next_out) {
                self.next_out += 1;
                return Ok(d);
            }
            let d = self.results.recv().map_err(|_| {
                Error::io("compress", std::io::Error::other("compression thread died"))
            })?;
            self.ready.insert(d.seq, d);
        }
    }

    /// Give an output buffer back for reuse.
    pub(crate) fn recycle(&mut self, output: Vec<u8>, lens: Vec<u32>) {
        self.free_out.push((output, lens));
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.senders.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
