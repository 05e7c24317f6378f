//! Fetching missing units from the source (single flight) and writing them to the cache.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use obd_core::{Error, ErrorKind, Result};

use crate::blob::{CachedBlob, Slot};
use crate::files::Files;
use crate::meta::{self, BLOCK};
use crate::{lock, tick};

/// Most bytes asked of the source in one read.
pub(crate) const MAX_FETCH: u64 = 32 << 20;
/// Longest a reader waits for another reader's fetch (the source bounds its own time, so
/// this only guards against a bug).
const FLIGHT_WAIT: Duration = Duration::from_secs(600);

/// One fetch of units `first..first + count` from the source, shared by every reader that
/// needs those units while it runs.
pub(crate) struct Flight {
    pub first: u64,
    pub count: u64,
    result: Mutex<Option<std::result::Result<Arc<Vec<u8>>, Error>>>,
    cv: Condvar,
}

/// A copy of `e` (errors are not `Clone`; waiters each get their own).
pub(crate) fn copy_error(e: &Error) -> Error {
    let mut c = Error::new(e.kind(), e.message());
    if let Some(p) = e.path() {
        c = c.with_path(p);
    }
    if let Some(o) = e.offset() {
        c = c.at_offset(o);
    }
    c
}

impl Flight {
    fn new(first: u64, count: u64) -> Self {
        Flight {
            first,
            count,
            result: Mutex::new(None),
            cv: Condvar::new(),
        }
    }

    /// Publish the outcome (first call wins) and wake every waiter.
    fn complete(&self, r: std::result::Result<Arc<Vec<u8>>, Error>) {
        let mut g = lock(&self.result);
        if g.is_none() {
            *g = Some(r);
        }
        self.cv.notify_all();
    }

    /// Wait for the outcome: the fetched bytes of the whole flight, or the fetch's error.
    pub fn wait(&self, digest: &str) -> Result<Arc<Vec<u8>>> {
        let deadline = Instant::now() + FLIGHT_WAIT;
        let mut g = lock(&self.result);
        loop {
            match &*g {
                Some(Ok(d)) => return Ok(d.clone()),
                Some(Err(e)) => return Err(copy_error(e)),
                None => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::new(
                    ErrorKind::TimedOut,
                    format!("{digest}: waited too long for another reader's fetch"),
                ));
            }
            g = self
                .cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Units a reader claimed for fetching. Dropping it unfinished (error, panic) wakes the
/// waiters with an error and returns the units to absent, so nothing stays stuck.
pub(crate) struct Claim<'a> {
    blob: &'a CachedBlob,
    pub flight: Arc<Flight>,
    pub first: u64,
    pub end: u64,
    epochs: Vec<u32>,
    files: Option<Arc<Files>>,
    done: bool,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.flight.complete(Err(Error::new(
            ErrorKind::Io,
            format!("{}: fetch abandoned", self.blob.digest),
        )));
        let mut st = lock(&self.blob.state);
        for u in self.first..self.end {
            let slot = &mut st.slots[u as usize];
            if matches!(slot, Slot::Fetching(f) if Arc::ptr_eq(f, &self.flight)) {
                *slot = Slot::Absent;
            }
        }
    }
}

impl CachedBlob {
    /// Claim the absent units from `u` (which must be absent) up to `last`, at most
    /// [`MAX_FETCH`] bytes (at least one unit), with the state locked.
    pub(crate) fn claim(&self, st: &mut crate::blob::State, u: u64, last: u64) -> Claim<'_> {
        let max_units = (MAX_FETCH / self.unit).max(1);
        let mut end = u + 1;
        while end <= last
            && end - u < max_units
            && matches!(st.slots.get(end as usize), Some(Slot::Absent))
        {
            end += 1;
        }
        let flight = Arc::new(Flight::new(u, end - u));
        for w in u..end {
            st.slots[w as usize] = Slot::Fetching(flight.clone());
        }
        Claim {
            blob: self,
            flight,
            first: u,
            end,
            epochs: st.epochs[u as usize..end as usize].to_vec(),
            files: st.files.clone(),
            done: false,
        }
    }

    /// Fetch the claimed units from the source (≤ 32 MiB per source read) and wake the
    /// waiters with the bytes or the error.
    pub(crate) fn fetch(&self, claim: &Claim<'_>) -> Result<Arc<Vec<u8>>> {
        let start = self.unit_bounds(claim.first).0;
        let stop = self.unit_bounds(claim.end - 1).1;
        let mut data = vec![0u8; (stop - start) as usize];
        let mut done = 0usize;
        while done < data.len() {
            let n = (data.len() - done).min(MAX_FETCH as usize);
            let at = start + done as u64;
            if let Err(e) = self.source.read_exact_at(&mut data[done..done + n], at) {
                let e = e.context(format!("{}: fetching {n} bytes at {at}", self.digest));
                claim.flight.complete(Err(copy_error(&e)));
                return Err(e);
            }
            done += n;
        }
        let data = Arc::new(data);
        claim.flight.complete(Ok(data.clone()));
        Ok(data)
    }

    /// Write the fetched units to the cache within the capacity and publish them; units
    /// that cannot be written are left absent (the reader already has the bytes).
    /// `verify` reads written data back before publishing (after a heal).
    pub(crate) fn fill(&self, mut claim: Claim<'_>, data: &[u8], verify: bool) {
        let start = self.unit_bounds(claim.first).0;
        let mut lens = Vec::new();
        let files = claim.files.clone();
        if files.is_some() && self.cache.writes_allowed() {
            for u in claim.first..claim.end {
                let (s, e) = self.unit_bounds(u);
                if !self.cache.reserve(Some(self), e - s) {
                    break;
                }
                lens.push(e - s);
            }
        }
        let bytes: u64 = lens.iter().sum();
        let mut written = false;
        if let (Some(f), true) = (&files, bytes > 0) {
            match f.write_data(&data[..bytes as usize], start) {
                Ok(()) => written = true,
                Err(e) => {
                    self.cache.note_write_error(&e);
                    f.punch(start, bytes);
                }
            }
            if written && verify && !self.read_back_matches(f, &data[..bytes as usize], start) {
                // The disk does not keep what is written: serve from memory and pause
                // caching like for any other write error.
                written = false;
                f.punch(start, bytes);
                let e = Error::new(
                    ErrorKind::Io,
                    "data read back differs from the data written",
                )
                .with_path(&f.data_path)
                .at_offset(start);
                self.cache.note_write_error(&e);
            }
            if written {
                self.cache.note_write_ok();
            }
        }
        let crcs: Vec<u32> = if written {
            data[..bytes as usize]
                .chunks(BLOCK as usize)
                .map(crc32c::crc32c)
                .collect()
        } else {
            Vec::new()
        };
        self.publish(&mut claim, &lens, written, &crcs);
    }

    fn read_back_matches(&self, f: &Files, data: &[u8], at: u64) -> bool {
        let mut back = vec![0u8; data.len()];
        f.read_data(&mut back, at).is_ok() && back == data
    }

    fn publish(&self, claim: &mut Claim<'_>, lens: &[u64], written: bool, crcs: &[u32]) {
        let mut st = lock(&self.state);
        let bpu = (self.unit / BLOCK) as usize;
        let same_files = match (&st.files, &claim.files) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        let n = (claim.end - claim.first) as usize;
        let mut publish = vec![false; n];
        for (i, p) in publish.iter_mut().enumerate() {
            let u = claim.first as usize + i;
            let ours = matches!(&st.slots[u], Slot::Fetching(f) if Arc::ptr_eq(f, &claim.flight));
            *p = written && same_files && ours && i < lens.len() && st.epochs[u] == claim.epochs[i];
        }
        // Meta records, one write per run of publishable units.
        if let Some(f) = &claim.files {
            let mut i = 0;
            while i < n {
                if !publish[i] {
                    i += 1;
                    continue;
                }
                let mut j = i;
                let mut recs = Vec::new();
                while j < n && publish[j] {
                    let u = claim.first + j as u64;
                    let c0 = j * bpu;
                    let c1 = ((j + 1) * bpu).min(crcs.len());
                    recs.extend(meta::encode_present(
                        self.refill,
                        u,
                        crcs.get(c0..c1).unwrap_or_default(),
                    ));
                    j += 1;
                }
                let at = meta::record_offset(self.refill, claim.first + i as u64);
                if let Err(e) = f.write_meta(&recs, at) {
                    self.cache.note_write_error(&e);
                    publish[i..j].iter_mut().for_each(|p| *p = false);
                }
                i = j;
            }
        }
        let t = tick();
        for (i, &p) in publish.iter().enumerate() {
            let u = claim.first + i as u64;
            let ui = u as usize;
            let ours = matches!(&st.slots[ui], Slot::Fetching(f) if Arc::ptr_eq(f, &claim.flight));
            let (s, e) = self.unit_bounds(u);
            if p {
                let blocks = self.unit_blocks(u);
                let c0 = i * bpu;
                let k = blocks.len();
                if let Some(src) = crcs.get(c0..c0 + k) {
                    st.crcs[blocks].copy_from_slice(src);
                }
                st.slots[ui] = Slot::Present;
                st.ticks[ui] = t;
                st.cached += e - s;
                continue;
            }
            if ours {
                st.slots[ui] = Slot::Absent;
            }
            if i < lens.len() {
                self.cache.release(e - s);
                if written && let Some(f) = &claim.files {
                    f.punch(s, e - s);
                }
            }
        }
        self.cached
            .store(st.cached, std::sync::atomic::Ordering::Relaxed);
        claim.done = true;
        drop(st);
        self.cache.publish_usage();
    }
}
