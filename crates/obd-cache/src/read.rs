//! The read path of a cached blob.

use std::time::{Duration, Instant};

use obd_core::{ReadAt, Result, check_range, priority};
use obd_metrics::{Metrics, ReadSource};

use crate::blob::{CachedBlob, Slot};
use crate::fill::Flight;
use crate::meta::BLOCK;
use crate::{lock, tick};

/// Attempts to serve one unit from the cache before reading it straight from the source.
const MAX_TRIES: u32 = 3;
/// Longest a background reader defers to demand reads before claiming a unit.
const BACKGROUND_WAIT: Duration = Duration::from_millis(500);

/// Outcome of a cached read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cached {
    /// Served and verified.
    Hit,
    /// Some unit is not cached (or changed while being read).
    Miss,
    /// A unit failed verification and was dropped.
    Healed,
}

enum Step<'a> {
    Present,
    Wait(std::sync::Arc<Flight>),
    Background,
    Claimed(crate::fill::Claim<'a>),
}

impl CachedBlob {
    /// Serve `[offset, offset + buf.len())` from the cache if every unit of it is present
    /// and every 4 KiB block verifies. Never fetches. `buf` is non-empty and in range.
    pub(crate) fn read_present(&self, buf: &mut [u8], offset: u64) -> Cached {
        let len = buf.len() as u64;
        let (u0, u1) = (offset / self.unit, (offset + len - 1) / self.unit);
        let (b0, b1) = (offset / BLOCK, (offset + len).div_ceil(BLOCK));
        let (files, crcs, epochs) = {
            let mut st = lock(&self.state);
            let Some(files) = st.files.clone() else {
                return Cached::Miss;
            };
            if !(u0..=u1).all(|u| matches!(st.slots.get(u as usize), Some(Slot::Present))) {
                return Cached::Miss;
            }
            let t = tick();
            for u in u0..=u1 {
                st.ticks[u as usize] = t;
            }
            let crcs = st.crcs[b0 as usize..b1 as usize].to_vec();
            let epochs = st.epochs[u0 as usize..=u1 as usize].to_vec();
            (files, crcs, epochs)
        };
        let (a0, a1) = (b0 * BLOCK, (b1 * BLOCK).min(self.size));
        let direct = a0 == offset && a1 == offset + len;
        let mut tmp = Vec::new();
        let region: &mut [u8] = if direct {
            &mut *buf
        } else {
            tmp.resize((a1 - a0) as usize, 0);
            &mut tmp
        };
        if let Err(e) = files.read_data(region, a0) {
            // Short (truncated) or failing file: find out what happened, then drop what is
            // still marked present in this range.
            let mut healed = self.check_files(true);
            let why = format!("read of the cache data file failed: {e}");
            for (i, u) in (u0..=u1).enumerate() {
                healed |= self.drop_bad(u as usize, epochs[i], &why);
            }
            return if healed { Cached::Healed } else { Cached::Miss };
        }
        for (i, chunk) in region.chunks(BLOCK as usize).enumerate() {
            if crc32c::crc32c(chunk) != crcs[i] {
                let u = (b0 + i as u64) * BLOCK / self.unit;
                let healed =
                    self.drop_bad(u as usize, epochs[(u - u0) as usize], "checksum mismatch");
                let _ = self.check_files(true);
                return if healed { Cached::Healed } else { Cached::Miss };
            }
        }
        if !direct {
            let s = (offset - a0) as usize;
            buf.copy_from_slice(&tmp[s..s + len as usize]);
        }
        Cached::Hit
    }

    /// What to do next for unit `u` of a read ending in unit `last`.
    fn step(&self, u: u64, last: u64, waited: bool) -> Step<'_> {
        let mut st = lock(&self.state);
        match &st.slots[u as usize] {
            Slot::Present => Step::Present,
            Slot::Fetching(f) => Step::Wait(f.clone()),
            Slot::Absent if priority::is_background() && !waited => Step::Background,
            Slot::Absent => Step::Claimed(self.claim(&mut st, u, last)),
        }
    }

    /// The miss path: unit by unit, serve present units from the cache, wait for units
    /// another reader fetches, fetch runs of absent units (and cache them).
    /// `healing`: a unit of this read failed verification, so fills are read back.
    fn read_slow(&self, buf: &mut [u8], offset: u64, mut healing: bool) -> Result<()> {
        let end = offset + buf.len() as u64;
        let last = (end - 1) / self.unit;
        let mut u = offset / self.unit;
        let (mut tries, mut waited) = (0u32, false);
        while u <= last {
            let (us, ue) = self.unit_bounds(u);
            let (s, e) = (us.max(offset), ue.min(end));
            let piece = &mut buf[(s - offset) as usize..(e - offset) as usize];
            if tries >= MAX_TRIES {
                // The unit keeps changing under us (eviction, clear): read it uncached.
                self.source.read_exact_at(piece, s).map_err(|err| {
                    err.context(format!("{}: reading {} bytes at {s}", self.digest, e - s))
                })?;
                (u, tries) = (u + 1, 0);
                continue;
            }
            match self.step(u, last, waited) {
                Step::Present => match self.read_present(piece, s) {
                    Cached::Hit => (u, tries) = (u + 1, 0),
                    Cached::Healed => (healing, tries) = (true, tries + 1),
                    Cached::Miss => tries += 1,
                },
                Step::Wait(f) => {
                    let data = f.wait(&self.digest)?;
                    let fs = self.unit_bounds(f.first).0;
                    let fe = self.unit_bounds(f.first + f.count - 1).1;
                    let (cs, ce) = (s, fe.min(end));
                    if let Some(src) = data.get((cs - fs) as usize..(ce - fs) as usize) {
                        buf[(cs - offset) as usize..(ce - offset) as usize].copy_from_slice(src);
                        (u, tries) = (f.first + f.count, 0);
                    } else {
                        tries += 1;
                    }
                }
                Step::Background => {
                    priority::wait_for_idle_demand(BACKGROUND_WAIT);
                    waited = true;
                }
                Step::Claimed(claim) => {
                    let data = self.fetch(&claim)?;
                    let fs = self.unit_bounds(claim.first).0;
                    let ce = (fs + data.len() as u64).min(end);
                    buf[(s - offset) as usize..(ce - offset) as usize]
                        .copy_from_slice(&data[(s - fs) as usize..(ce - fs) as usize]);
                    u = claim.end;
                    (tries, waited) = (0, false);
                    self.fill(claim, &data, healing);
                }
            }
        }
        Ok(())
    }

    /// The blob's digest (`sha256:<hex>`).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Drop the cached units overlapping `[offset, offset + len)` (an upper layer found
    /// bad bytes there); the next read refetches them. Fills in flight over the range are
    /// served but not cached.
    pub fn invalidate(&self, offset: u64, len: u64) {
        if len == 0 || offset >= self.size {
            return;
        }
        let end = offset.saturating_add(len).min(self.size);
        let mut st = lock(&self.state);
        let mut dropped = 0;
        for u in offset / self.unit..=(end - 1) / self.unit {
            let u = u as usize;
            if matches!(st.slots[u], Slot::Fetching(_)) {
                st.epochs[u] = st.epochs[u].wrapping_add(1);
            }
            dropped += self.drop_unit(&mut st, u);
        }
        drop(st);
        if dropped > 0 {
            Metrics::global().add_heal(&self.digest);
            tracing::info!(digest = %self.digest, offset, len, dropped, "cached range invalidated");
        }
        self.cache.publish_usage();
    }

    /// Drop every cached unit of this blob.
    pub fn invalidate_all(&self) {
        self.invalidate(0, self.size);
    }

    /// Bytes of this blob held by the cache.
    pub fn cached_bytes(&self) -> u64 {
        self.cached.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether every unit is cached.
    pub fn is_complete(&self) -> bool {
        self.cached_bytes() == self.size
    }

    /// Fill `buf` from the cache only: `Ok(true)` when the whole range was cached and
    /// verified, `Ok(false)` otherwise (nothing is fetched). Out-of-range reads fail.
    pub fn read_cached(&self, buf: &mut [u8], offset: u64) -> Result<bool> {
        check_range(self.size, offset, buf.len() as u64).map_err(|e| e.context(&self.digest))?;
        if buf.is_empty() {
            return Ok(true);
        }
        let _ = self.check_files(false);
        Ok(self.read_present(buf, offset) == Cached::Hit)
    }
}

impl ReadAt for CachedBlob {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64).map_err(|e| e.context(&self.digest))?;
        if buf.is_empty() {
            return Ok(());
        }
        let t0 = Instant::now();
        self.touch();
        let _ = self.check_files(false);
        let m = Metrics::global();
        let first = self.read_present(buf, offset);
        if first == Cached::Hit {
            m.add_lookup(&self.digest, true);
            m.observe_read(ReadSource::Cache, t0.elapsed());
            return Ok(());
        }
        m.add_lookup(&self.digest, false);
        self.read_slow(buf, offset, first == Cached::Healed)
    }
}
