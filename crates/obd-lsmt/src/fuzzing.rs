//! The code the fuzz targets `lsmt` and `lsmt_rw_index` run, shared with the corpus replay
//! test (`tests/fuzz_corpus.rs`) so that every corpus and crash file is also checked by
//! `cargo test`. Not a stable API.
//!
//! The checks compare the library with small oracles written from the format description:
//! whether a file must open, and what every byte of the device must read as (a linear scan
//! over the mappings, sector by sector for the writable layer's log).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use obd_core::{MemDevice, ReadAt, SECTOR_SIZE};

use crate::compact::{CommitMeta, compact, merge_stack};
use crate::layout::{
    self, HT_SIZE, HeaderTrailer, INVALID_OFFSET, KNOWN_FLAGS, SEGMENT_SIZE, Segment,
};
use crate::ro::MAX_RO_INDEX_SIZE;
use crate::{AppendLayer, CreateOptions, LayerStack, LsmtLayer};

/// Longest single read window, sealed layers.
const RO_WINDOW: u64 = 64 << 10;
/// Longest single read window, writable layers (the oracle is per sector).
const RW_WINDOW: u64 = 64 << 10;
/// Mappings around which windows are read.
const PICKS: usize = 6;
/// First data sector (data follows the 4 KiB header).
const DATA_START: u64 = HT_SIZE as u64 / SECTOR_SIZE;

/// `lsmt`: feed `data` to the LSMT codecs and to the read-only layer and stack readers, and
/// check their promises; panics on a broken promise.
///
/// 1. Codecs: a header/trailer that decodes re-encodes to the same fields; 16-byte
///    mappings decode and re-encode bit for bit.
/// 2. As a sealed layer ([`LsmtLayer::open`] on a [`MemDevice`]): it opens exactly when an
///    independent check of header, trailer and index says it should (else the error names
///    the offset), and reads of unaligned windows around mappings, at the start and at the
///    end of the device return exactly what the mappings say.
/// 3. A second layer is made from the file's own mappings (every other one or all, moved up
///    by 0..=255 sectors; bytes 4001 and 4002, in the header's padding, choose) with
///    [`compact`]; it must open and read what those mappings say.
/// 4. A [`LayerStack`] of the two (order and depth 1 to 3 from byte 4000) must open, keep a
///    sorted merged index, and read what stacking the mappings by hand gives; flattening it
///    with [`merge_stack`] gives a layer that opens and reads the same bytes again.
pub fn fuzz_one(data: &[u8]) {
    check_codecs(data);
    check_sealed(data);
}

fn check_codecs(data: &[u8]) {
    for at in [0, data.len().saturating_sub(HT_SIZE)] {
        let Ok(h) = HeaderTrailer::decode(&data[at..]) else {
            continue;
        };
        match h.encode() {
            Ok(enc) => {
                let back = HeaderTrailer::decode(&enc).expect("an encoded header decodes");
                assert_eq!(back, h, "header fields change through encode/decode");
            }
            // A 37-byte uuid field without NUL, or invalid UTF-8 made longer by replacement.
            Err(_) => assert!(h.uuid.len() > 36 || h.parent_uuid.len() > 36, "{h:?}"),
        }
    }
    let whole = data.len() / SEGMENT_SIZE * SEGMENT_SIZE;
    let segs = layout::decode_segments(&data[..whole]).expect("whole entries decode");
    assert_eq!(
        layout::encode_segments(&segs),
        &data[..whole],
        "mapping bits"
    );
    assert_eq!(layout::decode_segments(data).is_ok(), whole == data.len());
}

fn segment_at(raw: &[u8]) -> Segment {
    let mut b = [0u8; SEGMENT_SIZE];
    b.copy_from_slice(raw);
    Segment::decode(&b)
}

/// Where a mapping's data ends in its file, in sectors (a zeroed one "ends" at `moffset`).
fn data_end(s: &Segment) -> u64 {
    s.moffset + if s.zeroed { 0 } else { u64::from(s.length) }
}

/// The index entries (padding and empty ones dropped, tags 0) if a sealed layer must open,
/// from the format rules alone.
fn sealed_should_open(data: &[u8]) -> Option<Vec<Segment>> {
    if data.len() < 2 * HT_SIZE {
        return None;
    }
    let toff = data.len() - HT_SIZE;
    let (Ok(h), Ok(t)) = (
        HeaderTrailer::decode(data),
        HeaderTrailer::decode(&data[toff..]),
    ) else {
        return None;
    };
    if !h.is_header() || t.is_header() || !t.is_data_file() || !t.is_sealed() {
        return None;
    }
    if t.index_size > MAX_RO_INDEX_SIZE {
        return None;
    }
    let bytes = t.index_size as usize * SEGMENT_SIZE;
    let start = usize::try_from(t.index_offset).ok()?;
    if start > toff || bytes > toff - start || (bytes > 0 && start < HT_SIZE) {
        return None;
    }
    let limit = t.index_offset / SECTOR_SIZE;
    let mut out: Vec<Segment> = Vec::new();
    for raw in data[start..start + bytes].chunks_exact(SEGMENT_SIZE) {
        let s = Segment {
            tag: 0,
            ..segment_at(raw)
        };
        if s.offset == INVALID_OFFSET || s.length == 0 {
            continue;
        }
        let sorted = out.last().is_none_or(|p| p.end() <= s.offset);
        if !sorted || s.moffset < DATA_START || data_end(&s) > limit {
            return None;
        }
        out.push(s);
    }
    Some(out)
}

/// Byte windows `(offset, len)` of a device of `vsize` bytes worth reading: the start, the
/// end, odd little ranges, and around a few of `segs` (first, last, spread between).
fn windows(vsize: u64, segs: &[Segment], cap: u64) -> Vec<(u64, u64)> {
    let mut w = vec![
        (0, 64 << 10),
        (1, 1),
        (511, 2),
        (4095, 4098),
        (vsize / 2, 1000),
    ];
    w.push((vsize.saturating_sub(5000), 5000));
    let n = segs.len();
    let picks = (0..PICKS.min(n)).map(|k| if k == 0 { n - 1 } else { (k - 1) * n / PICKS });
    for i in picks {
        let s = &segs[i];
        let lo = (s.offset * SECTOR_SIZE).saturating_sub(700);
        w.push((lo, (s.end() * SECTOR_SIZE + 300).saturating_sub(lo)));
        w.push((s.end() * SECTOR_SIZE - 1, 2));
    }
    let mut w: Vec<(u64, u64)> = w
        .into_iter()
        .filter(|&(off, _)| off < vsize)
        .map(|(off, len)| (off, len.min(vsize - off).min(cap)))
        .filter(|&(_, len)| len > 0)
        .collect();
    w.dedup();
    w
}

/// A layer for the read oracle: its sorted mappings and the file they point into.
type Layer<'a> = (&'a [Segment], &'a [u8]);

/// The device bytes `[off, off + len)` of `layers` stacked bottom to top: each layer's
/// mappings overwrite what lies below (zeroed ones with zeros); unmapped bytes are zeros.
fn expected_ro(layers: &[Layer<'_>], off: u64, len: u64) -> Vec<u8> {
    let mut out = vec![0u8; len as usize];
    let end = off + len;
    for &(segs, file) in layers {
        for s in segs {
            let (a, b) = (
                (s.offset * SECTOR_SIZE).max(off),
                (s.end() * SECTOR_SIZE).min(end),
            );
            if a >= b {
                continue;
            }
            let dst = &mut out[(a - off) as usize..(b - off) as usize];
            if s.zeroed {
                dst.fill(0);
            } else {
                let src = (s.moffset * SECTOR_SIZE + a - s.offset * SECTOR_SIZE) as usize;
                dst.copy_from_slice(&file[src..src + dst.len()]);
            }
        }
    }
    out
}

/// Read every window of `dev` and compare with `want`.
fn check_windows(dev: &dyn ReadAt, what: &str, wins: &[(u64, u64)], want: &[Vec<u8>]) {
    for (&(off, len), want) in wins.iter().zip(want) {
        let got = dev.read_vec(off, len as usize);
        let got = got.unwrap_or_else(|e| panic!("{what}: in-range read failed: {e}"));
        assert!(&got == want, "{what}: read of {len} bytes at {off}");
    }
    assert!(
        dev.read_vec(dev.size(), 1).is_err(),
        "{what}: read past the end"
    );
}

fn check_sealed(data: &[u8]) {
    let dev: Arc<dyn ReadAt> = Arc::new(MemDevice::from_vec(data.to_vec()));
    let should = sealed_should_open(data);
    let layer = match LsmtLayer::open(Arc::clone(&dev)) {
        Ok(l) => l,
        Err(e) => {
            assert!(should.is_none(), "a valid sealed layer fails to open: {e}");
            assert!(e.offset().is_some(), "open error without offset: {e}");
            assert!(LayerStack::open(vec![dev]).is_err(), "stack opened it");
            return;
        }
    };
    let segs = should.expect("opened a sealed layer that breaks the format rules");
    assert!(
        layer.segments() == segs,
        "index differs from the file's entries"
    );
    let segs = &segs[..];
    let vsize = layer.vsize();
    let knob = |i: usize| data.get(4000 + i).copied().unwrap_or(0);

    // A second layer made from this one: every other mapping (or all), moved up by up to 255
    // sectors, compacted from this file's data.
    let (shift, keep) = (u64::from(knob(1)), knob(2));
    let moved: Vec<Segment> = segs
        .iter()
        .enumerate()
        .filter(|&(i, s)| (keep & 2 != 0 || i % 2 == usize::from(keep & 1)) && s.length > 0)
        .map(|(_, s)| Segment {
            offset: s.offset + shift,
            ..*s
        })
        .filter(|s| s.end() <= INVALID_OFFSET)
        .collect();
    let mut buf = Vec::new();
    let meta = CommitMeta {
        vsize,
        ..Default::default()
    };
    compact(&moved, &[&*dev], &mut buf, &meta).expect("compact valid mappings");
    let variant: Arc<dyn ReadAt> = Arc::new(MemDevice::from_vec(buf));
    let compacted = LsmtLayer::open(Arc::clone(&variant)).expect("a compacted layer opens");

    let mut wins = windows(vsize, segs, RO_WINDOW);
    wins.extend(windows(vsize, &moved, RO_WINDOW));
    let own: Layer<'_> = (segs, data);
    let other: Layer<'_> = (&moved, data);
    let want: Vec<Vec<u8>> = wins
        .iter()
        .map(|&(off, len)| expected_ro(&[own], off, len))
        .collect();
    check_windows(&layer, "layer", &wins, &want);
    let want: Vec<Vec<u8>> = wins
        .iter()
        .map(|&(off, len)| expected_ro(&[other], off, len))
        .collect();
    check_windows(&compacted, "compacted", &wins, &want);

    let (order, files): (Vec<Layer<'_>>, Vec<Arc<dyn ReadAt>>) = match knob(0) % 4 {
        0 => (vec![own], vec![Arc::clone(&dev)]),
        1 => (vec![own, other], vec![Arc::clone(&dev), variant]),
        2 => (vec![other, own], vec![variant, Arc::clone(&dev)]),
        _ => (
            vec![own, other, own],
            vec![Arc::clone(&dev), variant, Arc::clone(&dev)],
        ),
    };
    let n = files.len();
    let stack = LayerStack::open(files).expect("a stack of valid layers opens");
    assert_eq!(stack.vsize(), vsize);
    let merged = stack.index().segments();
    for (i, m) in merged.iter().enumerate() {
        assert!(m.length > 0 && usize::from(m.tag) < n, "merged {m:?}");
        assert!(
            i == 0 || merged[i - 1].end() <= m.offset,
            "merged unsorted at {i}"
        );
    }
    let want: Vec<Vec<u8>> = wins
        .iter()
        .map(|&(off, len)| expected_ro(&order, off, len))
        .collect();
    check_windows(&stack, "stack", &wins, &want);

    let mut flat = Vec::new();
    let fits = merged.iter().all(|s| s.end() <= INVALID_OFFSET);
    match merge_stack(&stack, &mut flat, &CommitMeta::default()) {
        Ok(stats) => {
            assert!(fits, "merged a mapping beyond the address space");
            assert_eq!(stats.file_size, flat.len() as u64);
            let m = LsmtLayer::open(MemDevice::from_vec(flat)).expect("a merged layer opens");
            assert_eq!(m.vsize(), vsize);
            check_windows(&m, "merged", &wins, &want);
        }
        Err(e) => assert!(!fits, "merge_stack failed on a valid stack: {e}"),
    }
}

/// Virtual size written into the scratch layer's headers.
const RW_VSIZE: u64 = 64 << 20;
/// Data sectors after the header in the scratch data file (enough for the fixture
/// `b_commit/rw/l1.index`), followed by a partial sector.
const RW_DATA_SECTORS: u64 = 720;
/// UUID of the scratch layer.
const RW_UUID: &str = "f0220000-0000-4000-8000-00000000f022";

/// A scratch directory with the data file of an append-only layer (a header made by
/// [`AppendLayer::create`] and a known pattern after it) and the index file path the fuzz
/// bytes are written to. One per thread; removed when the thread ends.
struct Scratch {
    dir: PathBuf,
    data_path: PathBuf,
    index_path: PathBuf,
    data: Vec<u8>,
    index_header: Vec<u8>,
}

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        remove_stale(&base);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("obd-lsmt-fuzz-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the scratch directory");
        let data_path = dir.join("layer.data");
        let index_path = dir.join("layer.index");
        let opts = CreateOptions {
            uuid: Some(RW_UUID.into()),
            parent_uuid: None,
        };
        AppendLayer::create(&data_path, &index_path, RW_VSIZE, opts)
            .and_then(AppendLayer::close)
            .expect("create the scratch layer");
        let mut data = fs::read(&data_path).expect("read the scratch data file");
        let len = HT_SIZE as u64 + RW_DATA_SECTORS * SECTOR_SIZE + 100;
        data.extend((HT_SIZE as u64..len).map(|o| (o.wrapping_mul(0x9E37_79B1) >> 13) as u8));
        fs::write(&data_path, &data).expect("write the scratch data file");
        let index_header = fs::read(&index_path).expect("read the scratch index file");
        Scratch {
            dir,
            data_path,
            index_path,
            data,
            index_header,
        }
    }
}

/// Remove scratch directories left by fuzzing processes that died (a crash skips `Drop`).
fn remove_stale(base: &Path) {
    let proc = Path::new("/proc");
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    if !proc.join("self").exists() {
        return;
    }
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("obd-lsmt-fuzz-")) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !proc.join(pid).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

thread_local! {
    static SCRATCH: Scratch = Scratch::new();
}

/// `lsmt_rw_index`: replay `data` as the index log of an append-only writable layer and
/// check the result; panics on a broken promise.
///
/// When `data` starts with the LSMT magic it is the whole index file; otherwise it is the
/// log after a valid index header. The data file is a fixed scratch file (4 KiB header and
/// 720 sectors of a known pattern). [`AppendLayer::open_read_only`] must succeed exactly when
/// the header is an index header and every entry maps data inside the data file; a torn tail
/// must be reported; reads must match a per-sector replay of the log in order; and a commit
/// of the layer must open as a sealed layer that reads the same.
pub fn fuzz_rw_index(data: &[u8]) {
    SCRATCH.with(|s| check_rw(s, data));
}

fn check_rw(sc: &Scratch, data: &[u8]) {
    let index = if HeaderTrailer::has_magic(data) {
        data.to_vec()
    } else {
        [&sc.index_header[..], data].concat()
    };
    fs::write(&sc.index_path, &index).expect("write the index file");
    let data_sectors = sc.data.len() as u64 / SECTOR_SIZE;
    let entries = rw_should_open(&index, data_sectors);
    let layer = match AppendLayer::open_read_only(&sc.data_path, &sc.index_path) {
        Ok(l) => l,
        Err(e) => {
            assert!(entries.is_none(), "a valid index fails to replay: {e}");
            assert!(e.path().is_some(), "replay error without path: {e}");
            // Known gap: a file too short for a header is reported without an offset.
            let short = index.len() < HT_SIZE;
            assert!(
                short || e.offset().is_some(),
                "replay error without offset: {e}"
            );
            return;
        }
    };
    let entries = entries.expect("opened an index that breaks the format rules");
    let torn = !(index.len() - HT_SIZE).is_multiple_of(SEGMENT_SIZE);
    let torn_note = format!("{}: ignored a torn", sc.index_path.display());
    let noted = layer.warnings().iter().any(|w| w.starts_with(&torn_note));
    assert_eq!(torn, noted, "torn tail warning: {:?}", layer.warnings());
    let ih = HeaderTrailer::decode(&index).expect("index header");
    assert_eq!(layer.vsize(), ih.virtual_size);
    let segs = layer.segments();
    for (i, s) in segs.iter().enumerate() {
        assert!(s.length > 0 && s.moffset >= DATA_START);
        assert!(data_end(s) <= data_sectors, "mapping {s:?} past the data");
        assert!(i == 0 || segs[i - 1].end() <= s.offset, "unsorted at {i}");
    }
    let vsize = layer.vsize();
    let mut picks: Vec<Segment> = entries.iter().take(3).copied().collect();
    picks.extend(entries.iter().rev().take(3));
    let wins = windows(vsize, &picks, RW_WINDOW);
    let expect: Vec<Vec<u8>> = wins
        .iter()
        .map(|&(off, len)| expected_rw(&entries, &sc.data, off, len))
        .collect();
    check_windows(&layer, "writable layer", &wins, &expect);

    let mut out = Vec::new();
    let fits = segs.iter().all(|s| s.end() <= INVALID_OFFSET);
    match layer.commit(&mut out, &CommitMeta::default()) {
        Ok(_) => {
            assert!(fits, "committed a mapping beyond the address space");
            let c = LsmtLayer::open(MemDevice::from_vec(out)).expect("a commit opens");
            assert_eq!(c.vsize(), vsize);
            check_windows(&c, "committed layer", &wins, &expect);
        }
        Err(e) => assert!(!fits, "commit of a valid layer failed: {e}"),
    }
}

/// The log entries (padding and empty ones dropped) if the index file must replay against a
/// data file of `data_sectors` sectors, from the format rules alone.
fn rw_should_open(index: &[u8], data_sectors: u64) -> Option<Vec<Segment>> {
    let h = HeaderTrailer::decode(index.get(..HT_SIZE)?).ok()?;
    let bad_flags = h.flags & !KNOWN_FLAGS != 0 || h.is_sealed() || h.is_data_file();
    if !h.is_header() || bad_flags || h.index_offset != HT_SIZE as u64 {
        return None;
    }
    let mut out = Vec::new();
    for raw in index[HT_SIZE..].chunks_exact(SEGMENT_SIZE) {
        let s = segment_at(raw);
        if s.offset == INVALID_OFFSET || s.length == 0 {
            continue;
        }
        if s.moffset < DATA_START || data_end(&s) > data_sectors {
            return None;
        }
        out.push(s);
    }
    Some(out)
}

/// The device bytes `[off, off + len)` after applying the log `entries` in order, sector by
/// sector: later entries win; zeroed ones read as zeros.
fn expected_rw(entries: &[Segment], file: &[u8], off: u64, len: u64) -> Vec<u8> {
    let first = off / SECTOR_SIZE;
    let last = (off + len).div_ceil(SECTOR_SIZE);
    let mut map: Vec<Option<u64>> = vec![None; (last - first) as usize];
    for s in entries {
        let (a, b) = (s.offset.max(first), s.end().min(last));
        for sec in a..b {
            map[(sec - first) as usize] = (!s.zeroed).then_some(s.moffset + sec - s.offset);
        }
    }
    let mut out = vec![0u8; len as usize];
    for (i, m) in map.iter().enumerate() {
        let Some(msec) = m else { continue };
        let sec = first + i as u64;
        let a = (sec * SECTOR_SIZE).max(off);
        let b = ((sec + 1) * SECTOR_SIZE).min(off + len);
        let src = (msec * SECTOR_SIZE + a - sec * SECTOR_SIZE) as usize;
        out[(a - off) as usize..(b - off) as usize]
            .copy_from_slice(&file[src..src + (b - a) as usize]);
    }
    out
}
