//! The workers of a file-list prefetch: each opens the ext4 filesystem on the device with
//! `ext4-view` (not `Send`, so one instance per thread), takes paths from a shared queue,
//! reads files to their end and queues the entries of directories.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ext4_view::{Ext4, Ext4Error, Ext4Read, PathBuf as ExtPath};
use obd_core::ReadAt;

use super::handle::Shared;

/// Deepest directory walked below a listed directory.
const MAX_DEPTH: u32 = 128;
/// Most paths queued in one prefetch (bounds a walk of a corrupt, cyclic tree).
const MAX_ITEMS: u64 = 1_000_000;
/// Per-call read buffer (ext4-view returns at most one block per call).
const BUF: usize = 64 * 1024;
/// How long an idle worker waits for a directory walk to queue more.
const QUEUE_WAIT: Duration = Duration::from_millis(20);

/// A path still to prefetch.
struct Item {
    path: ExtPath,
    /// Walk as a directory (else read as a file; a listed directory is walked anyway).
    dir: bool,
    /// 0 for listed paths, else the depth below the listed directory.
    depth: u32,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Item>,
    /// Workers processing an item (which may queue more).
    busy: usize,
    /// Paths queued so far.
    queued: u64,
    overflow_warned: bool,
}

struct Queue {
    state: Mutex<QueueState>,
    cv: Condvar,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Next item, or `None` when all is done (queue empty, nobody busy) or stopped.
    fn take(&self, sh: &Shared) -> Option<Item> {
        let mut st = self.lock();
        loop {
            if sh.stopped() {
                return None;
            }
            if let Some(item) = st.items.pop_front() {
                st.busy += 1;
                return Some(item);
            }
            if st.busy == 0 {
                return None;
            }
            st = self
                .cv
                .wait_timeout(st, QUEUE_WAIT)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn done_one(&self) {
        let mut st = self.lock();
        st.busy = st.busy.saturating_sub(1);
        drop(st);
        self.cv.notify_all();
    }

    /// Queue `item`; false (with one warning) once [`MAX_ITEMS`] paths were queued.
    fn push(&self, item: Item) -> bool {
        let mut st = self.lock();
        if st.queued >= MAX_ITEMS {
            if !st.overflow_warned {
                st.overflow_warned = true;
                tracing::warn!("prefetch: more than {MAX_ITEMS} paths; the rest are skipped");
            }
            return false;
        }
        st.queued += 1;
        st.items.push_back(item);
        drop(st);
        self.cv.notify_one();
        true
    }
}

/// Reads the device for ext4-view, yielding to demand reads and aborting once stopped.
struct DeviceReader {
    dev: Arc<dyn ReadAt>,
    sh: Arc<Shared>,
}

impl Ext4Read for DeviceReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn core::error::Error + Send + Sync + 'static>> {
        if !self.sh.yield_to_demand() {
            return Err("prefetch stopped".into());
        }
        self.dev
            .read_exact_at(dst, start_byte)
            .map_err(|e| Box::new(e) as Box<dyn core::error::Error + Send + Sync>)
    }
}

fn device_name(dev: &dyn ReadAt) -> String {
    dev.path()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the device".into())
}

/// Open the filesystem, turning a panic of the parser into an error.
fn load(dev: &Arc<dyn ReadAt>, sh: &Arc<Shared>) -> Result<Ext4, String> {
    let reader = DeviceReader {
        dev: dev.clone(),
        sh: sh.clone(),
    };
    match catch_unwind(AssertUnwindSafe(|| Ext4::load(Box::new(reader)))) {
        Ok(Ok(fs)) => Ok(fs),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the ext4 reader panicked on this device".into()),
    }
}

/// The first worker: check the device holds ext4, queue the list, start the other workers
/// and work along.
pub(super) fn lead(sh: &Arc<Shared>, dev: Arc<dyn ReadAt>, paths: Vec<String>, workers: usize) {
    let fs = match load(&dev, sh) {
        Ok(fs) => fs,
        Err(e) => {
            if !sh.stopped() {
                tracing::warn!(
                    "prefetch: {} does not hold an ext4 filesystem this reader can open ({e}); \
                     the file list ({} entries) is not prefetched",
                    device_name(&*dev),
                    paths.len()
                );
            }
            sh.add_skipped(paths.len() as u64);
            return;
        }
    };
    let queue = Arc::new(Queue {
        state: Mutex::new(QueueState::default()),
        cv: Condvar::new(),
    });
    for p in &paths {
        let dir = p.ends_with('/');
        let trimmed = p.trim_end_matches('/');
        let text = if trimmed.is_empty() { "/" } else { trimmed };
        match ExtPath::try_from(text.as_bytes()) {
            Ok(path) => {
                queue.push(Item {
                    path,
                    dir,
                    depth: 0,
                });
            }
            Err(e) => {
                tracing::warn!("prefetch: listed path {p:?} is not valid: {e}");
                sh.add_skipped(1);
            }
        }
    }
    tracing::info!(
        "prefetch: reading {} listed paths from the ext4 filesystem on {} with {workers} workers",
        paths.len(),
        device_name(&*dev)
    );
    for i in 1..workers {
        let (dev, queue) = (dev.clone(), queue.clone());
        sh.spawn(format!("obd-prefetch-{i}"), move |sh| {
            match load(&dev, sh) {
                Ok(fs) => work(&fs, &queue, sh),
                Err(e) => tracing::debug!("prefetch: worker {i} cannot open the filesystem: {e}"),
            }
        });
    }
    work(&fs, &queue, sh);
}

fn work(fs: &Ext4, queue: &Queue, sh: &Shared) {
    let mut buf = vec![0u8; BUF];
    while let Some(item) = queue.take(sh) {
        let run = catch_unwind(AssertUnwindSafe(|| process(fs, queue, sh, &item, &mut buf)));
        if run.is_err() && sh.add_failed() {
            tracing::warn!(
                "prefetch: the ext4 reader panicked on {}; skipped",
                item.path.display()
            );
        }
        queue.done_one();
    }
}

fn process(fs: &Ext4, queue: &Queue, sh: &Shared, item: &Item, buf: &mut [u8]) {
    let result = if item.dir {
        walk(fs, queue, item)
    } else {
        match read_file(fs, sh, item, buf) {
            // A listed directory without the trailing `/`: walk it too.
            Err(Ext4Error::IsADirectory) => walk(fs, queue, item),
            Err(e) => Err(e),
            Ok(()) => {
                sh.add_read();
                Ok(())
            }
        }
    };
    if let Err(e) = result {
        if sh.stopped() {
            return;
        }
        if sh.add_failed() {
            let what = if item.depth == 0 {
                "listed path"
            } else {
                "path"
            };
            tracing::warn!("prefetch: {what} {} skipped: {e}", item.path.display());
        }
    }
}

fn read_file(fs: &Ext4, sh: &Shared, item: &Item, buf: &mut [u8]) -> Result<(), Ext4Error> {
    let mut file = fs.open(&item.path)?;
    loop {
        let n = file.read_bytes(buf)?;
        if n == 0 {
            return Ok(());
        }
        sh.add_bytes(n as u64);
    }
}

fn walk(fs: &Ext4, queue: &Queue, item: &Item) -> Result<(), Ext4Error> {
    if item.depth >= MAX_DEPTH {
        tracing::warn!(
            "prefetch: {} is more than {MAX_DEPTH} directories deep; not walked further",
            item.path.display()
        );
        return Ok(());
    }
    for entry in fs.read_dir(&item.path)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "." || name == ".." {
            continue;
        }
        let ft = entry.file_type()?;
        let dir = ft.is_dir();
        if !dir && !ft.is_regular_file() {
            continue;
        }
        let next = Item {
            path: entry.path(),
            dir,
            depth: item.depth + 1,
        };
        if !queue.push(next) {
            break;
        }
    }
    Ok(())
}
