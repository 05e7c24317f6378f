//! Model tests: random layers committed with `compact`, stacked, read back and merged, all
//! compared with a plain byte-vector model of the device.

mod ro_common;

use std::io::Read;
use std::sync::Arc;

use obd_core::testing::{check_concurrent_reads, check_read_at};
use obd_core::{FileDevice, MemDevice, ReadAt};
use obd_lsmt::layout::{MAX_SEGMENT_SECTORS, Segment};
use obd_lsmt::{
    CommitMeta, LayerStack, LsmtLayer, compact, compact_to_file, merge_stack, merge_stack_to_file,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A random layer: its data source, its sorted segments, and the committed file.
struct RandomLayer {
    source: Vec<u8>,
    segs: Vec<Segment>,
    file: Vec<u8>,
    vsize: u64,
}

fn random_segments(rng: &mut StdRng, vsectors: u64, src_sectors: u64) -> Vec<Segment> {
    let mut segs = Vec::new();
    let mut pos = rng.random_range(0..8u64);
    // Sometimes map a little past the device end: allowed in files, never visible.
    while pos < vsectors + 4 {
        let long = rng.random_bool(0.05);
        let length = if long {
            rng.random_range(1..=300)
        } else {
            rng.random_range(1..=40)
        };
        let zeroed = rng.random_bool(0.2) || u64::from(length) > src_sectors;
        let moffset = if zeroed {
            rng.random_range(0..100)
        } else {
            rng.random_range(0..=src_sectors - u64::from(length))
        };
        segs.push(Segment {
            offset: pos,
            length,
            moffset,
            zeroed,
            tag: 0,
        });
        pos += u64::from(length)
            + if rng.random_bool(0.3) {
                0
            } else {
                rng.random_range(1..30)
            };
        // Runs contiguous in the source too, so that compaction joins them.
        if rng.random_bool(0.3)
            && let Some(&last) = segs.last()
            && !last.zeroed
            && last.moffset + u64::from(last.length) + 8 <= src_sectors
            && pos == last.end()
        {
            segs.push(Segment {
                offset: pos,
                length: 8,
                moffset: last.moffset + u64::from(last.length),
                zeroed: false,
                tag: 0,
            });
            pos += 8;
        }
    }
    segs
}

fn random_layer(rng: &mut StdRng, vsectors: u64, vsize: u64) -> RandomLayer {
    let src_sectors = rng.random_range(0..=400u64);
    let mut source = vec![0u8; (src_sectors * 512) as usize];
    rng.fill(&mut source[..]);
    let segs = random_segments(rng, vsectors, src_sectors);
    let src = MemDevice::from_vec(source.clone());
    let meta = CommitMeta {
        vsize,
        user_tag: b"model".to_vec(),
        ..Default::default()
    };
    let mut file = Vec::new();
    compact(&segs, &[&src], &mut file, &meta).unwrap();
    RandomLayer {
        source,
        segs,
        file,
        vsize,
    }
}

/// Apply a layer to a device model of `model.len()` bytes.
fn apply(model: &mut [u8], layer: &RandomLayer) {
    let sectors = model.len() as u64 / 512;
    for s in &layer.segs {
        for k in 0..u64::from(s.length) {
            let lba = s.offset + k;
            if lba >= sectors {
                break;
            }
            let dst = &mut model[(lba * 512) as usize..][..512];
            if s.zeroed {
                dst.fill(0);
            } else {
                dst.copy_from_slice(&layer.source[((s.moffset + k) * 512) as usize..][..512]);
            }
        }
    }
}

fn check_stack(seed: u64, nlayers: usize, vsectors: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let vsize = vsectors * 512;
    let layers: Vec<RandomLayer> = (0..nlayers)
        .map(|i| {
            // Lower layers may carry another (or no) size; the top one decides.
            let v = if i + 1 == nlayers {
                vsize
            } else {
                [0, vsize, vsize / 2][i % 3]
            };
            random_layer(&mut rng, vsectors, v)
        })
        .collect();

    // Each layer alone.
    for l in &layers {
        let opened = LsmtLayer::open(MemDevice::from_vec(l.file.clone())).unwrap();
        let mut model = vec![0u8; (l.vsize / 512 * 512) as usize];
        apply(&mut model, l);
        assert_eq!(opened.vsize(), l.vsize);
        assert!(
            opened.read_vec(0, model.len()).unwrap() == model,
            "single layer differs"
        );
        assert_eq!(opened.user_tag(), b"model");
    }

    // The stack.
    let mut model = vec![0u8; vsize as usize];
    for l in &layers {
        apply(&mut model, l);
    }
    let srcs: Vec<Arc<dyn ReadAt>> = layers
        .iter()
        .map(|l| Arc::new(MemDevice::from_vec(l.file.clone())) as _)
        .collect();
    let stack = LayerStack::open(srcs).unwrap();
    assert_eq!(stack.vsize(), vsize);
    assert!(
        stack.read_vec(0, model.len()).unwrap() == model,
        "stack differs from the model"
    );
    check_read_at(&stack, &model, 512, seed);
    check_read_at(&stack, &model, 1, seed + 1);

    // Flattened, in memory and through a file: same bytes, same device.
    let mut merged = Vec::new();
    let meta = CommitMeta::default();
    let stats = merge_stack(&stack, &mut merged, &meta).unwrap();
    assert_eq!(stats.file_size, merged.len() as u64);
    let tmp = tempfile::tempfile().unwrap();
    merge_stack_to_file(&stack, &tmp, &meta).unwrap();
    let mut via_file = Vec::new();
    (&tmp).read_to_end(&mut via_file).unwrap();
    assert!(
        via_file == merged,
        "merge_stack_to_file differs from merge_stack"
    );
    let flat = LsmtLayer::open(MemDevice::from_vec(merged)).unwrap();
    assert_eq!(flat.vsize(), vsize);
    assert!(
        flat.read_vec(0, model.len()).unwrap() == model,
        "merged layer differs"
    );
    assert!(
        flat.segments()
            .iter()
            .all(|s| s.length <= MAX_SEGMENT_SECTORS)
    );
    check_read_at(&flat, &model, 512, seed + 2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_stacks_match_the_model(seed in any::<u64>(), nlayers in 1usize..=8, vsectors in 1u64..=700) {
        check_stack(seed, nlayers, vsectors);
    }
}

/// Segments longer than the on-disk maximum, contiguous in the source, split and re-joined
/// by compaction; data layers on top cut them at odd places.
#[test]
fn long_segments_and_deep_stack() {
    let vsectors = 40_000u64;
    let mut rng = StdRng::seed_from_u64(7);
    let mut source = vec![0u8; (vsectors * 512) as usize];
    rng.fill(&mut source[..]);
    let src = MemDevice::from_vec(source.clone());
    let segs = [
        Segment {
            offset: 0,
            length: 20_000,
            moffset: 0,
            zeroed: false,
            tag: 0,
        },
        Segment {
            offset: 20_000,
            length: 17_000,
            moffset: 20_000,
            zeroed: false,
            tag: 0,
        },
        Segment {
            offset: 37_000,
            length: 3_000,
            moffset: 0,
            zeroed: true,
            tag: 0,
        },
    ];
    let meta = CommitMeta {
        vsize: vsectors * 512,
        ..Default::default()
    };
    let mut base = Vec::new();
    compact(&segs, &[&src], &mut base, &meta).unwrap();
    let base_file = base.clone();
    let base = LsmtLayer::open(MemDevice::from_vec(base)).unwrap();
    let lens: Vec<u32> = base.segments().iter().map(|s| s.length).collect();
    // 20000 = 255 steps of 64 (16320) + 3680; the second segment continues the run in
    // 64-sector steps until the next would reach 16383: 3680 + 198 * 64 = 16352.
    assert_eq!(lens, vec![16320, 16352, 4328, 3000]);
    let mut model = source.clone();
    model[37_000 * 512..].fill(0);
    assert!(base.read_vec(0, model.len()).unwrap() == model);

    // 63 thin layers above, each overwriting one random range.
    let mut srcs: Vec<Arc<dyn ReadAt>> = vec![Arc::new(MemDevice::from_vec(base_file))];
    let mut stack_layers = Vec::new();
    for i in 0..63u64 {
        let len = rng.random_range(1..=64u32);
        let off = rng.random_range(0..vsectors - u64::from(len));
        let mut data = vec![0u8; len as usize * 512];
        rng.fill(&mut data[..]);
        let seg = Segment {
            offset: off,
            length: len,
            moffset: 0,
            zeroed: i % 5 == 0,
            tag: 0,
        };
        let mut file = Vec::new();
        compact(
            &[seg],
            &[&MemDevice::from_vec(data.clone())],
            &mut file,
            &meta,
        )
        .unwrap();
        let at = (off * 512) as usize;
        if seg.zeroed {
            model[at..at + data.len()].fill(0);
        } else {
            model[at..at + data.len()].copy_from_slice(&data);
        }
        stack_layers.push(file);
    }
    for f in stack_layers {
        srcs.push(Arc::new(MemDevice::from_vec(f)));
    }
    let stack = LayerStack::open(srcs).unwrap();
    assert_eq!(stack.layers().len(), 64);
    check_read_at(&stack, &model, 512, 11);
    check_concurrent_reads(&stack, &model, 512);
    let mut merged = Vec::new();
    merge_stack(&stack, &mut merged, &CommitMeta::default()).unwrap();
    let flat = LsmtLayer::open(MemDevice::from_vec(merged)).unwrap();
    assert!(flat.read_vec(0, model.len()).unwrap() == model);
}

/// Layers in real files: compaction copies with copy_file_range and must give the same
/// bytes as the buffered path.
#[test]
fn file_backed_sources_use_kernel_copy() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(99);
    let mut srcs: Vec<Arc<dyn ReadAt>> = Vec::new();
    for i in 0..3 {
        let l = random_layer(&mut rng, 2000, 2000 * 512);
        let p = dir.path().join(format!("l{i}.lsmt"));
        std::fs::write(&p, &l.file).unwrap();
        srcs.push(Arc::new(FileDevice::open(&p).unwrap()));
    }
    let stack = LayerStack::open(srcs).unwrap();
    let mut buffered = Vec::new();
    merge_stack(&stack, &mut buffered, &CommitMeta::default()).unwrap();
    let out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("merged.lsmt"))
        .unwrap();
    merge_stack_to_file(&stack, &out, &CommitMeta::default()).unwrap();
    assert!(std::fs::read(dir.path().join("merged.lsmt")).unwrap() == buffered);

    // One layer re-compacted from its own file.
    let l0 = &stack.layers()[0];
    let tmp = tempfile::tempfile().unwrap();
    let meta = CommitMeta {
        vsize: l0.vsize(),
        user_tag: b"model".to_vec(),
        ..Default::default()
    };
    compact_to_file(l0.segments(), &[l0.source().as_ref()], &tmp, &meta).unwrap();
    let mut got = Vec::new();
    (&tmp).read_to_end(&mut got).unwrap();
    let mut want = Vec::new();
    l0.source()
        .as_ref()
        .read_vec(0, l0.source().size() as usize)
        .map(|v| want = v)
        .unwrap();
    assert!(got == want, "re-compacting a committed layer changed it");

    let appending = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.path().join("append.lsmt"))
        .unwrap();
    let e = compact_to_file(l0.segments(), &[l0.source().as_ref()], &appending, &meta);
    assert_eq!(e.unwrap_err().kind(), obd_core::ErrorKind::InvalidInput);
}

fn committed(segs: &[Segment], src: &[u8], vsize: u64) -> Arc<dyn ReadAt> {
    let mut file = Vec::new();
    let meta = CommitMeta {
        vsize,
        ..Default::default()
    };
    compact(
        segs,
        &[&MemDevice::from_vec(src.to_vec())],
        &mut file,
        &meta,
    )
    .unwrap();
    Arc::new(MemDevice::from_vec(file))
}

/// No segments: header + trailer only; a device of zeros.
#[test]
fn empty_layer() {
    let f = committed(&[], &[], 1 << 20);
    assert_eq!(f.size(), 8192);
    let l = LsmtLayer::open(f).unwrap();
    assert!(l.segments().is_empty());
    assert_eq!(l.trailer().index_size, 0);
    assert_eq!(l.trailer().index_offset, 4096);
    check_read_at(&l, &vec![0u8; 1 << 20], 512, 1);
}

/// A device size that is not a whole number of sectors: the last sector is cut.
#[test]
fn odd_vsize_and_unaligned_reads() {
    let src: Vec<u8> = (0..1024u32).map(|i| (i * 7 + 1) as u8).collect();
    let seg = Segment {
        offset: 0,
        length: 2,
        moffset: 0,
        zeroed: false,
        tag: 0,
    };
    let l = LsmtLayer::open(committed(&[seg], &src, 1000)).unwrap();
    check_read_at(&l, &src[..1000], 1, 5);
    assert_eq!(l.read_vec(511, 3).unwrap(), src[511..514].to_vec());
}

/// The device size comes from the top-most layer with a non-zero size.
#[test]
fn stack_vsize_from_topmost_nonzero_layer() {
    let a = committed(&[], &[], 4 << 20);
    let b = committed(&[], &[], 2 << 20);
    let z = committed(&[], &[], 0);
    let s = LayerStack::open(vec![a.clone(), b.clone(), z.clone()]).unwrap();
    assert_eq!(s.vsize(), 2 << 20);
    let s = LayerStack::open(vec![b, a, z.clone()]).unwrap();
    assert_eq!(s.vsize(), 4 << 20);
    let s = LayerStack::open(vec![z]).unwrap();
    assert_eq!(s.vsize(), 0);
    assert_eq!(s.read_vec(0, 0).unwrap(), Vec::<u8>::new());
}

/// Upstream merge numbers layers from the top in the written index; parent and size default
/// to the bottom layer's parent and the stack's size.
#[test]
fn merge_stack_metadata_and_tags() {
    let src = vec![7u8; 4096];
    let s0 = Segment {
        offset: 0,
        length: 8,
        moffset: 0,
        zeroed: false,
        tag: 0,
    };
    let s1 = Segment {
        offset: 8,
        length: 8,
        moffset: 0,
        zeroed: false,
        tag: 0,
    };
    let mut f0 = Vec::new();
    let meta0 = CommitMeta {
        uuid: Some("11111111-1111-4111-8111-111111111111".into()),
        parent_uuid: Some("99999999-1111-4111-8111-111111111111".into()),
        vsize: 1 << 20,
        user_tag: Vec::new(),
    };
    compact(&[s0], &[&MemDevice::from_vec(src.clone())], &mut f0, &meta0).unwrap();
    let stack = LayerStack::open(vec![
        Arc::new(MemDevice::from_vec(f0)),
        committed(&[s1], &src, 1 << 20),
    ])
    .unwrap();
    let mut out = Vec::new();
    let stats = merge_stack(&stack, &mut out, &CommitMeta::default()).unwrap();
    assert_eq!(stats.index_entries, 2);
    // On disk: entry 0 (bottom layer) has tag 1, entry 1 (top) tag 0.
    let at = stats.index_offset as usize;
    let e0 = Segment::decode(out[at..at + 16].try_into().unwrap());
    let e1 = Segment::decode(out[at + 16..at + 32].try_into().unwrap());
    assert_eq!((e0.tag, e1.tag), (1, 0));
    // Contiguous in LBA and file, but from different layers: not joined.
    assert_eq!((e0.length, e1.length), (8, 8));
    let flat = LsmtLayer::open(MemDevice::from_vec(out)).unwrap();
    assert_eq!(flat.parent_uuid(), "99999999-1111-4111-8111-111111111111");
    assert_eq!(flat.uuid(), obd_lsmt::layout::NIL_UUID);
    assert_eq!(flat.vsize(), 1 << 20);
    assert!(
        flat.segments().iter().all(|s| s.tag == 0),
        "tags are runtime-only on load"
    );
    let bad = CommitMeta {
        uuid: Some("not-a-uuid".into()),
        ..Default::default()
    };
    assert!(merge_stack(&stack, &mut Vec::new(), &bad).is_err());
}
