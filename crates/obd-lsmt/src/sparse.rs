//! Sparse writable layers (upstream `LSMTSparseFile`, `overlaybd-create -s`).
//!
//! ```text
//!   data file:  [header 4 KiB: header|data|sparse_rw][device byte x at file offset 4096 + x]
//!               (apparent size 4096 + vsize; never-written ranges are holes)
//!   index file: empty, unused
//! ```
//!
//! Writes go in place; a discard punches a hole. There is no index on disk: at open the
//! index is rebuilt from the file's allocated extents (`SEEK_DATA` / `SEEK_HOLE`), split
//! into entries of at most 16383 sectors.
//!
//! # Discarded versus never written
//!
//! This follows upstream exactly. While the layer is open, a discard inserts a *zeroed*
//! mapping into the in-memory index, so the range reads as zeros and hides lower layers
//! (and a commit records it as a zeroed entry). Nothing about the discard is stored except
//! the punched hole, so after the layer is reopened a discarded range is a hole like a
//! never-written one, and lower layers show through it again. Likewise the rebuilt index
//! has the file system's block granularity: a sector never written that shares a file
//! system block with a written one reads as zeros after reopening instead of showing the
//! lower layer. Use 4 KiB-aligned I/O on a sparse upper layer to keep both views equal,
//! or an append-only layer when discards must hide lower data across reopens.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use obd_core::{BlockDevice, Error, ReadAt, Result, ResultExt, SECTOR_SIZE, check_range};
use rustix::fs::{FallocateFlags, SeekFrom};
use rustix::io::Errno;

use crate::compact::{CommitMeta, CompactStats, compact, compact_to_file};
use crate::device::read_layered;
use crate::layout::{FLAG_SPARSE_RW, HT_SIZE, HeaderTrailer, MAX_SEGMENT_SECTORS, Segment};
use crate::rw::WRITE_PIECE_SECTORS;
use crate::rw_index::RwIndex;
use crate::writable::{
    CreateOptions, LayerFile, WritableLayer, check_io, commit_meta, new_header, pieces, read_header,
};

/// File offset of device byte 0.
const BASE: u64 = HT_SIZE as u64;
/// Sector of the data file holding device sector 0.
const BASE_SECTOR: u64 = BASE / SECTOR_SIZE;

/// A sparse writable layer: one data file written in place.
///
/// As a [`BlockDevice`] it is the layer alone: unmapped sectors read as zeros. Stack it over
/// lower layers with [`StackDevice`](crate::device::StackDevice).
pub struct SparseLayer {
    data: LayerFile,
    header: HeaderTrailer,
    vsize: u64,
    writable: bool,
    index: RwLock<RwIndex>,
    /// Serialises writes and discards with their index updates.
    write_lock: Mutex<()>,
}

impl std::fmt::Debug for SparseLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparseLayer")
            .field("data", &self.data.path)
            .field("vsize", &self.vsize)
            .field("uuid", &self.header.uuid)
            .field("segments", &self.index_read().len())
            .field("writable", &self.writable)
            .finish()
    }
}

impl SparseLayer {
    /// Create a new sparse layer of `vsize` bytes, as `overlaybd-create -s`: the data file
    /// gets a header with flags header|data|sparse_rw and is extended to `4096 + vsize`;
    /// the index file is created empty. Neither file may exist.
    pub fn create(data: &Path, index: &Path, vsize: u64, opts: CreateOptions) -> Result<Self> {
        let h = new_header(vsize, &opts, FLAG_SPARSE_RW, true)?;
        let bytes = h.encode()?;
        let df = LayerFile::create_new(data)?;
        let undo = |e: Error, both: bool| {
            let _ = std::fs::remove_file(data);
            if both {
                let _ = std::fs::remove_file(index);
            }
            e
        };
        df.write_all_at(&bytes, 0)
            .and_then(|()| df.truncate(BASE + vsize))
            .and_then(|()| df.sync_data())
            .map_err(|e| undo(e, false))?;
        let xf = LayerFile::create_new(index).map_err(|e| undo(e, false))?;
        xf.sync_data().map_err(|e| undo(e, true))?;
        drop((df, xf));
        Self::open(data)
    }

    /// Open a sparse layer's data file for reading and writing, rebuilding its index from
    /// the file's allocated extents.
    pub fn open(data: &Path) -> Result<Self> {
        Self::open_with(data, true)
    }

    /// Open a sparse layer read-only (for inspection or commit); writes fail.
    pub fn open_read_only(data: &Path) -> Result<Self> {
        Self::open_with(data, false)
    }

    fn open_with(data: &Path, writable: bool) -> Result<Self> {
        let df = LayerFile::open(data, writable)?;
        let header = read_header(&df)?;
        if !header.is_data_file() || !header.is_sparse_rw() {
            return Err(Error::corrupt(format!(
                "LSMT header flags {:#x}: not the data file of a sparse layer",
                header.flags
            ))
            .at_offset(28)
            .with_path(data));
        }
        let vsize = header.virtual_size;
        let want = vsize.checked_add(BASE).ok_or_else(|| {
            Error::corrupt(format!("virtual size {vsize} is too large")).at_offset(48)
        });
        let want = want.map_err(|e| e.with_path(data))?;
        let len = df.size();
        if len > want {
            return Err(Error::corrupt(format!(
                "sparse layer file is {len} bytes, more than header + virtual size ({want}); \
                 sealed or not a sparse layer?"
            ))
            .at_offset(want)
            .with_path(data));
        }
        if len < want && writable {
            df.truncate(want)?;
        }
        let index = scan_extents(&df, want)?;
        Ok(SparseLayer {
            data: df,
            header,
            vsize,
            writable,
            index: RwLock::new(index),
            write_lock: Mutex::new(()),
        })
    }

    /// Size in bytes of the virtual device.
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

    /// The data file, whose sector `8 + x` holds device sector `x`.
    pub fn data_source(&self) -> &dyn ReadAt {
        &self.data
    }

    /// The data file's header.
    pub fn header(&self) -> &HeaderTrailer {
        &self.header
    }

    /// A sorted snapshot of the layer's mappings (sector units, tags 0).
    pub fn segments(&self) -> Vec<Segment> {
        self.index_read().snapshot()
    }

    fn index_read(&self) -> RwLockReadGuard<'_, RwIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, entries: impl Iterator<Item = Segment>) {
        let mut idx = self.index.write().unwrap_or_else(|p| p.into_inner());
        for e in entries {
            idx.insert(e);
        }
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

    fn punch_hole(&self, file_off: u64, len: u64) -> Result<()> {
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(&self.data.file, flags, file_off, len) {
            Ok(()) => Ok(()),
            // No hole punching here: store zeros instead (they stay allocated).
            Err(Errno::OPNOTSUPP) => {
                let zeros = vec![0u8; len.min(1 << 20) as usize];
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(zeros.len() as u64) as usize;
                    self.data.write_all_at(&zeros[..n], file_off + done)?;
                    done += n as u64;
                }
                Ok(())
            }
            Err(e) => Err(Error::io("punch hole", e.into())
                .at_offset(file_off)
                .with_path(&self.data.path)),
        }
    }

    /// Write this layer as a committed read-only layer to `out`; see
    /// [`WritableLayer::commit`] for the defaults taken from the layer.
    pub fn commit(&self, out: &mut impl Write, meta: &CommitMeta) -> Result<CompactStats> {
        let _w = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let meta = commit_meta(meta, self.vsize, &self.header.parent_uuid);
        compact(&self.segments(), &[&self.data], out, &meta)
    }

    /// [`SparseLayer::commit`] into a regular file (positional writes, `copy_file_range`).
    pub fn commit_to_file(&self, out: &File, meta: &CommitMeta) -> Result<CompactStats> {
        let _w = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let meta = commit_meta(meta, self.vsize, &self.header.parent_uuid);
        compact_to_file(&self.segments(), &[&self.data], out, &meta)
    }
}

/// Seek `whence` in `f`; `None` when there is no more data (ENXIO).
fn seek(f: &LayerFile, whence: SeekFrom) -> Result<Option<u64>> {
    match rustix::fs::seek(&f.file, whence) {
        Ok(p) => Ok(Some(p)),
        Err(Errno::NXIO) => Ok(None),
        Err(e) => Err(Error::io("seek", e.into()).with_path(&f.path)),
    }
}

/// Build the index from the allocated extents of `df` between the header and `limit`.
fn scan_extents(df: &LayerFile, limit: u64) -> Result<RwIndex> {
    let mut idx = RwIndex::new();
    let mut pos = BASE;
    while pos < limit {
        let Some(begin) = seek(df, SeekFrom::Data(pos))? else {
            break;
        };
        if begin >= limit {
            break;
        }
        let end = seek(df, SeekFrom::Hole(begin))?.unwrap_or(limit).min(limit);
        if end <= begin {
            break;
        }
        // Extents are file system blocks; round outward to whole sectors to be safe.
        let b = (begin / SECTOR_SIZE).max(BASE_SECTOR);
        let e = end.div_ceil(SECTOR_SIZE);
        for (o, l, _) in pieces(b - BASE_SECTOR, e - b, MAX_SEGMENT_SECTORS) {
            idx.insert(Segment {
                offset: o,
                length: l,
                moffset: o + BASE_SECTOR,
                ..Default::default()
            });
        }
        pos = end;
    }
    Ok(idx)
}

impl ReadAt for SparseLayer {
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

impl BlockDevice for SparseLayer {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_writable(offset)?;
        check_io(self.vsize, offset, buf.len() as u64, "write").with_path(&self.data.path)?;
        let _w = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.data.write_all_at(buf, BASE + offset)?;
        let n = buf.len() as u64 / SECTOR_SIZE;
        self.insert(
            pieces(offset / SECTOR_SIZE, n, WRITE_PIECE_SECTORS).map(|(o, l, _)| Segment {
                offset: o,
                length: l,
                moffset: o + BASE_SECTOR,
                ..Default::default()
            }),
        );
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        if self.writable {
            self.data.sync_data()
        } else {
            Ok(())
        }
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.check_writable(offset)?;
        check_io(self.vsize, offset, len, "discard").with_path(&self.data.path)?;
        if len == 0 {
            return Ok(());
        }
        let _w = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.punch_hole(BASE + offset, len)?;
        self.insert(
            pieces(offset / SECTOR_SIZE, len / SECTOR_SIZE, MAX_SEGMENT_SECTORS).map(
                |(o, l, _)| Segment {
                    offset: o,
                    length: l,
                    moffset: o + BASE_SECTOR,
                    zeroed: true,
                    tag: 0,
                },
            ),
        );
        Ok(())
    }

    fn is_read_only(&self) -> bool {
        !self.writable
    }
}

impl WritableLayer for SparseLayer {
    fn uuid(&self) -> &str {
        &self.header.uuid
    }
    fn parent_uuid(&self) -> &str {
        &self.header.parent_uuid
    }
    fn is_sparse(&self) -> bool {
        true
    }
    fn lookup_into(&self, start: u64, end: u64, out: &mut Vec<Segment>) {
        out.extend(self.index_read().lookup(start, end));
    }
    fn segments(&self) -> Vec<Segment> {
        SparseLayer::segments(self)
    }
    fn data_source(&self) -> &dyn ReadAt {
        &self.data
    }
    fn commit(&self, mut out: &mut dyn Write, meta: &CommitMeta) -> Result<CompactStats> {
        SparseLayer::commit(self, &mut out, meta)
    }
    fn commit_to_file(&self, out: &File, meta: &CommitMeta) -> Result<CompactStats> {
        SparseLayer::commit_to_file(self, out, meta)
    }
}
