//! Append-only writable layers (upstream `LSMTFile`, `overlaybd-create` without `-s`).
//!
//! ```text
//!   data file:  [header 4 KiB: header|data][payload of write 1][payload of write 2]...
//!   index file: [header 4 KiB: header|index, index_offset 4096][entry][entry]...
//! ```
//!
//! Every write appends its payload at the end of the data file and logs one 16-byte entry
//! per piece of at most 4 MiB (upstream `MAX_IO_SIZE`); a discard logs zeroed entries of at
//! most 16383 sectors whose `moffset` is the data file's end. On open the log is replayed in
//! order, later entries overriding earlier ones.
//!
//! Crash safety: entries are kept in memory and written to the index file only after the
//! data they point at is on disk (`flush`, or every [`GROUP_COMMIT_ENTRIES`] entries), so an
//! index entry never outlives its data. A crash loses what was written since the last
//! `flush`, never what came before, and never leaves an index that refers past the data.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

use obd_core::{BlockDevice, Error, ReadAt, Result, ResultExt, SECTOR_SIZE, check_range};

use crate::compact::{CommitMeta, CompactStats, compact, compact_to_file};
use crate::device::read_layered;
use crate::layout::{
    FLAG_DATA, FLAG_SPARSE_RW, HT_SIZE, HeaderTrailer, MAX_SEGMENT_SECTORS, Segment,
    encode_segments,
};
use crate::rw_index::RwIndex;
use crate::rw_replay::{check_not_sealed, replay};
use crate::seal::{SealInfo, write_seal};
use crate::writable::{
    CreateOptions, LayerFile, WritableLayer, check_io, commit_meta, new_header, pieces, read_header,
};

/// Largest number of entries a writable index may hold (upstream `MAX_LSMT_INDEX_SIZE`).
pub const MAX_RW_INDEX_SIZE: u64 = 128_000_000;
/// Largest piece one index entry of a write covers, in sectors (upstream 4 MiB `MAX_IO_SIZE`).
pub const WRITE_PIECE_SECTORS: u32 = (4 << 20) / SECTOR_SIZE as u32;
/// Pending index entries that trigger a group commit without an explicit flush.
pub const GROUP_COMMIT_ENTRIES: usize = 4096;

#[derive(Debug)]
struct AppendState {
    /// Where the next payload goes (sector aligned).
    data_end: u64,
    /// Where the next index entry goes.
    index_end: u64,
    /// Entries applied in memory but not yet in the index file.
    pending: Vec<Segment>,
}

/// An append-only writable layer: a data file and an index log.
///
/// As a [`BlockDevice`] it is the layer alone: unmapped sectors read as zeros. Stack it over
/// lower layers with [`StackDevice`](crate::device::StackDevice).
pub struct AppendLayer {
    data: LayerFile,
    index_file: LayerFile,
    header: HeaderTrailer,
    vsize: u64,
    writable: bool,
    index: RwLock<RwIndex>,
    state: Mutex<AppendState>,
    warnings: Vec<String>,
}

impl std::fmt::Debug for AppendLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendLayer")
            .field("data", &self.data.path)
            .field("index", &self.index_file.path)
            .field("vsize", &self.vsize)
            .field("uuid", &self.header.uuid)
            .field("segments", &self.segment_count())
            .field("writable", &self.writable)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AppendLayer {
    /// Create a new layer of `vsize` bytes (a non-zero multiple of 512): both files must not
    /// exist. Writes exactly what upstream `overlaybd-create` writes: a 4 KiB header in each
    /// file (data: flags header|data; index: flags header, `index_offset` 4096).
    pub fn create(data: &Path, index: &Path, vsize: u64, opts: CreateOptions) -> Result<Self> {
        let dh = new_header(vsize, &opts, 0, true)?;
        let ih = HeaderTrailer {
            flags: dh.flags & !FLAG_DATA,
            index_offset: HT_SIZE as u64,
            ..dh.clone()
        };
        let (dbytes, ibytes) = (dh.encode()?, ih.encode()?);
        let df = LayerFile::create_new(data)?;
        let undo = |e: Error, both: bool| {
            let _ = std::fs::remove_file(data);
            if both {
                let _ = std::fs::remove_file(index);
            }
            e
        };
        df.write_all_at(&dbytes, 0)
            .and_then(|()| df.sync_data())
            .map_err(|e| undo(e, false))?;
        let xf = LayerFile::create_new(index).map_err(|e| undo(e, false))?;
        xf.write_all_at(&ibytes, 0)
            .and_then(|()| xf.sync_data())
            .map_err(|e| undo(e, true))?;
        drop((df, xf));
        Self::open(data, index)
    }

    /// Open an existing layer for reading and writing, replaying its index log.
    ///
    /// A torn final entry (the log's length after the header is not a multiple of 16, as a
    /// crash in the middle of an append leaves it) is cut off and reported in
    /// [`AppendLayer::warnings`]. Entries mapping data beyond the data file are an error.
    pub fn open(data: &Path, index: &Path) -> Result<Self> {
        Self::open_with(data, index, true)
    }

    /// Open an existing layer read-only (for inspection or commit); writes fail.
    pub fn open_read_only(data: &Path, index: &Path) -> Result<Self> {
        Self::open_with(data, index, false)
    }

    fn open_with(data: &Path, index: &Path, writable: bool) -> Result<Self> {
        let df = LayerFile::open(data, writable)?;
        let xf = LayerFile::open(index, writable)?;
        let header = read_header(&df)?;
        if !header.is_data_file() || header.flags & FLAG_SPARSE_RW != 0 {
            return Err(Error::corrupt(format!(
                "LSMT header flags {:#x}: not the data file of an append-only layer",
                header.flags
            ))
            .at_offset(28)
            .with_path(data));
        }
        check_not_sealed(&df, &header)?;
        let ih = read_header(&xf)?;
        if ih.is_data_file() || ih.index_offset != HT_SIZE as u64 {
            return Err(Error::corrupt(format!(
                "LSMT header flags {:#x}, index_offset {}: not the index file of an \
                 append-only layer",
                ih.flags, ih.index_offset
            ))
            .at_offset(28)
            .with_path(index));
        }
        let mut warnings = Vec::new();
        if ih.virtual_size != header.virtual_size || ih.uuid != header.uuid {
            warnings.push(format!(
                "{}: index header (vsize {}, uuid {}) differs from the data header (vsize {}, \
                 uuid {}); using the index header as upstream does",
                index.display(),
                ih.virtual_size,
                ih.uuid,
                header.virtual_size,
                header.uuid
            ));
        }
        let data_len = df.size();
        let (rw_index, index_end, torn) = replay(&xf, data_len / SECTOR_SIZE)?;
        if torn > 0 {
            warnings.push(format!(
                "{}: ignored a torn final index entry ({torn} bytes at offset {index_end})",
                index.display()
            ));
            if writable {
                xf.truncate(index_end)?;
            }
        }
        let data_end = data_len.div_ceil(SECTOR_SIZE) * SECTOR_SIZE;
        df.set_size(data_end);
        Ok(AppendLayer {
            data: df,
            index_file: xf,
            vsize: ih.virtual_size,
            header,
            writable,
            index: RwLock::new(rw_index),
            state: Mutex::new(AppendState {
                data_end,
                index_end,
                pending: Vec::new(),
            }),
            warnings,
        })
    }

    /// Size in bytes of the virtual device (from the index header, as upstream).
    pub fn vsize(&self) -> u64 {
        self.vsize
    }

    /// The layer's UUID text.
    pub fn uuid(&self) -> &str {
        &self.header.uuid
    }

    /// The parent layer's UUID text.
    pub fn parent_uuid(&self) -> &str {
        &self.header.parent_uuid
    }

    /// The data file's header.
    pub fn header(&self) -> &HeaderTrailer {
        &self.header
    }

    /// Problems found and tolerated at open (a torn index tail, mismatched headers).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// A sorted snapshot of the layer's mappings (sector units, tags 0).
    pub fn segments(&self) -> Vec<Segment> {
        self.index_read().snapshot()
    }

    /// Number of mappings in the index.
    pub fn segment_count(&self) -> usize {
        self.index_read().len()
    }

    /// The data file, readable up to its current end; mapping `moffset`s point into it.
    pub fn data_source(&self) -> &dyn ReadAt {
        &self.data
    }

    fn index_read(&self) -> RwLockReadGuard<'_, RwIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, st: &mut AppendState, entries: &[Segment]) {
        {
            let mut idx = self.index.write().unwrap_or_else(|p| p.into_inner());
            for e in entries {
                idx.insert(*e);
            }
        }
        st.pending.extend_from_slice(entries);
        if st.pending.len() >= GROUP_COMMIT_ENTRIES {
            // The write itself succeeded; if this commit fails the entries stay pending and
            // the next flush retries and reports it.
            let _ = self.commit_pending(st);
        }
    }

    /// Make the data durable, then append the pending entries to the index file.
    fn commit_pending(&self, st: &mut AppendState) -> Result<()> {
        if st.pending.is_empty() {
            return Ok(());
        }
        self.data.sync_data()?;
        let bytes = encode_segments(&st.pending);
        self.index_file.write_all_at(&bytes, st.index_end)?;
        st.index_end += bytes.len() as u64;
        st.pending.clear();
        Ok(())
    }

    fn check_writable(&self, offset: u64) -> Result<()> {
        if self.writable {
            return Ok(());
        }
        Err(
            Error::new(obd_core::ErrorKind::ReadOnly, "layer opened read-only")
                .at_offset(offset)
                .with_path(&self.data.path),
        )
    }

    /// Flush, then close. Reports errors that dropping the layer would swallow.
    pub fn close(self) -> Result<()> {
        BlockDevice::flush(&self)
    }

    /// Seal the layer in place (`overlaybd-commit --seal`): write pending entries, then append
    /// the index and a sealed trailer to the data file, which from then on opens as a
    /// read-only layer ([`LsmtLayer`](crate::ro::LsmtLayer)). See [`crate::seal`].
    pub fn seal(self) -> Result<SealInfo> {
        self.check_writable(0)?;
        let mut st = lock(&self.state);
        self.commit_pending(&mut st)?;
        self.index_file.sync_data()?;
        let segs = self.segments();
        let info = write_seal(&self.data, &self.header, &segs, st.data_end)?;
        st.data_end = info.file_size;
        Ok(info)
    }

    /// Write this layer as a committed read-only layer to `out` (`overlaybd-commit`);
    /// see [`WritableLayer::commit`] for the defaults taken from the layer.
    pub fn commit(&self, out: &mut impl Write, meta: &CommitMeta) -> Result<CompactStats> {
        let _st = lock(&self.state);
        let segs = self.segments();
        let meta = commit_meta(meta, self.vsize, &self.header.parent_uuid);
        compact(&segs, &[&self.data], out, &meta)
    }

    /// [`AppendLayer::commit`] into a regular file (positional writes, `copy_file_range`).
    pub fn commit_to_file(&self, out: &File, meta: &CommitMeta) -> Result<CompactStats> {
        let _st = lock(&self.state);
        let segs = self.segments();
        let meta = commit_meta(meta, self.vsize, &self.header.parent_uuid);
        compact_to_file(&segs, &[&self.data], out, &meta)
    }
}

impl ReadAt for AppendLayer {
    fn size(&self) -> u64 {
        self.vsize
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.vsize, offset, buf.len() as u64).with_path(&self.data.path)?;
        read_layered(self, None, buf, offset)
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.data.path)
    }
}

impl BlockDevice for AppendLayer {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_writable(offset)?;
        check_io(self.vsize, offset, buf.len() as u64, "write").with_path(&self.data.path)?;
        if buf.is_empty() {
            return Ok(());
        }
        let mut st = lock(&self.state);
        let pos = st.data_end;
        self.data.write_all_at(buf, pos)?;
        st.data_end = pos + buf.len() as u64;
        self.data.set_size(st.data_end);
        let (first, mfirst) = (offset / SECTOR_SIZE, pos / SECTOR_SIZE);
        let entries: Vec<Segment> =
            pieces(first, buf.len() as u64 / SECTOR_SIZE, WRITE_PIECE_SECTORS)
                .map(|(o, l, d)| Segment {
                    offset: o,
                    length: l,
                    moffset: mfirst + d,
                    ..Default::default()
                })
                .collect();
        self.apply(&mut st, &entries);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        let mut st = lock(&self.state);
        self.commit_pending(&mut st)?;
        self.data.sync_data()?;
        self.index_file.sync_data()
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.check_writable(offset)?;
        check_io(self.vsize, offset, len, "discard").with_path(&self.data.path)?;
        let mut st = lock(&self.state);
        let moffset = st.data_end / SECTOR_SIZE;
        let entries: Vec<Segment> =
            pieces(offset / SECTOR_SIZE, len / SECTOR_SIZE, MAX_SEGMENT_SECTORS)
                .map(|(o, l, _)| Segment {
                    offset: o,
                    length: l,
                    moffset,
                    zeroed: true,
                    tag: 0,
                })
                .collect();
        self.apply(&mut st, &entries);
        Ok(())
    }

    fn is_read_only(&self) -> bool {
        !self.writable
    }
}

impl Drop for AppendLayer {
    fn drop(&mut self) {
        if self.writable {
            // Best effort, as upstream's close(); use `close()` to see errors.
            let mut st = lock(&self.state);
            let _ = self.commit_pending(&mut st);
        }
    }
}

impl WritableLayer for AppendLayer {
    fn uuid(&self) -> &str {
        &self.header.uuid
    }
    fn parent_uuid(&self) -> &str {
        &self.header.parent_uuid
    }
    fn is_sparse(&self) -> bool {
        false
    }
    fn lookup_into(&self, start: u64, end: u64, out: &mut Vec<Segment>) {
        out.extend(self.index_read().lookup(start, end));
    }
    fn segments(&self) -> Vec<Segment> {
        AppendLayer::segments(self)
    }
    fn data_source(&self) -> &dyn ReadAt {
        &self.data
    }
    fn commit(&self, mut out: &mut dyn Write, meta: &CommitMeta) -> Result<CompactStats> {
        AppendLayer::commit(self, &mut out, meta)
    }
    fn commit_to_file(&self, out: &File, meta: &CommitMeta) -> Result<CompactStats> {
        AppendLayer::commit_to_file(self, out, meta)
    }
}
