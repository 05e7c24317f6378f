//! Read-only layers, stacks and compaction against files written by upstream overlaybd.

mod ro_common;

use std::sync::Arc;

use obd_core::{FileDevice, MemDevice, ReadAt};
use obd_lsmt::layout::{NIL_UUID, Segment, decode_segments};
use obd_lsmt::{CommitMeta, LayerStack, LsmtLayer, compact, compact_to_file, merge_layers};
use ro_common::*;

const UUID1: &str = "11111111-1111-4111-8111-111111111111";
const UUID2: &str = "22222222-2222-4222-8222-222222222222";
const VSIZE: u64 = 64 << 20;

fn b_expected() -> String {
    text("b_commit/expected.txt")
}

fn layer(rel: &str) -> LsmtLayer<Arc<dyn ReadAt>> {
    LsmtLayer::open(open(rel)).unwrap()
}

#[test]
fn committed_layers_open_with_expected_index() {
    let exp = b_expected();
    let l1 = layer("b_commit/layers/l1.lsmt");
    assert_eq!(
        l1.segments(),
        dump(&exp, "index of layers/l1.lsmt alone").as_slice()
    );
    assert_eq!(l1.vsize(), VSIZE);
    assert_eq!(l1.uuid(), UUID1);
    assert_eq!(l1.parent_uuid(), NIL_UUID);
    assert_eq!(l1.trailer().index_offset, 337_920);
    assert_eq!(l1.trailer().index_size, 256);
    assert!(l1.user_tag().is_empty());

    let l2 = layer("b_commit/layers/l2.lsmt");
    assert_eq!(
        l2.segments(),
        dump(&exp, "index of layers/l2.lsmt alone").as_slice()
    );
    assert_eq!(l2.uuid(), UUID2);
    assert_eq!(l2.parent_uuid(), UUID1);
}

#[test]
fn device_hashes_match_upstream() {
    let exp = b_expected();
    let l1 = layer("b_commit/layers/l1.lsmt");
    assert_eq!(sha_device(&l1), value(&exp, "device_after_layer1"));

    let s1 = LayerStack::open(vec![open("b_commit/layers/l1.lsmt")]).unwrap();
    assert_eq!(s1.vsize(), VSIZE);
    assert_eq!(sha_device(&s1), value(&exp, "device_after_layer1"));

    let s12 = LayerStack::open(vec![
        open("b_commit/layers/l1.lsmt"),
        open("b_commit/layers/l2.lsmt"),
    ])
    .unwrap();
    assert_eq!(sha_device(&s12), value(&exp, "device_after_layer2"));
}

/// Only l1 and l2 are shipped, but l3's index is in expected.txt: merging the three indexes
/// must give upstream's merged dump. Upstream numbers tags from the top (0 = l3; the
/// fixture README says "from the lowest", but the dump itself has l1's pieces at tag 2),
/// while `merge_layers` numbers from the bottom, so tags are compared as `2 - tag`.
#[test]
fn merged_index_of_three_layers_matches_upstream_dump() {
    let exp = b_expected();
    let l1 = layer("b_commit/layers/l1.lsmt");
    let l2 = layer("b_commit/layers/l2.lsmt");
    let l3 = dump(&exp, "index of layers/l3.lsmt alone");
    let merged: Vec<Segment> = merge_layers(&[l1.segments(), l2.segments(), &l3])
        .into_iter()
        .map(|s| Segment {
            tag: 2 - s.tag,
            ..s
        })
        .collect();
    assert_eq!(merged, dump(&exp, "merged index of layers 1..3"));

    // The stack of the two shipped layers equals the same merge without l3.
    let s12 = LayerStack::open(vec![l1.source().clone(), l2.source().clone()]).unwrap();
    assert_eq!(
        s12.index().segments(),
        merge_layers(&[l1.segments(), l2.segments()]).as_slice()
    );
}

/// Range hashes of the final (l1+l2+l3) device. l3's data is not shipped, so l3 is replaced
/// by a layer holding only its discard (sectors 2048..2056, which we know read as zeros); the
/// ranges that touch l3's data entries (sectors 4224.., 12289, 131056..) cannot be checked.
#[test]
fn range_hashes_not_depending_on_l3_data() {
    let exp = b_expected();
    let l3_discard = [Segment {
        offset: 2048,
        length: 8,
        moffset: 0,
        zeroed: true,
        tag: 0,
    }];
    let mut l3 = Vec::new();
    let empty = MemDevice::zeroed(0);
    let meta = CommitMeta {
        vsize: VSIZE,
        ..Default::default()
    };
    compact(&l3_discard, &[&empty], &mut l3, &meta).unwrap();
    let stack = LayerStack::open(vec![
        open("b_commit/layers/l1.lsmt"),
        open("b_commit/layers/l2.lsmt"),
        Arc::new(MemDevice::from_vec(l3)),
    ])
    .unwrap();
    let l3_data = [(4224u64, 8u64), (12289, 1), (131056, 16)];
    let mut checked = 0;
    let ranges = exp
        .lines()
        .skip_while(|l| !l.starts_with("# range sha256"))
        .skip(1)
        .take_while(|l| !l.starts_with('#'));
    for line in ranges {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (off, len): (u64, u64) = (f[0].parse().unwrap(), f[1].parse().unwrap());
        let touches_l3 = l3_data
            .iter()
            .any(|&(s, n)| off < (s + n) * 512 && s * 512 < off + len);
        if touches_l3 {
            continue;
        }
        assert_eq!(sha_range(&stack, off, len), f[2], "range {off} {len}");
        checked += 1;
    }
    assert_eq!(checked, 11);
}

#[test]
fn compacting_a_committed_layer_reproduces_it_byte_for_byte() {
    for (rel, uuid, parent) in [
        ("b_commit/layers/l1.lsmt", UUID1, None),
        ("b_commit/layers/l2.lsmt", UUID2, Some(UUID1)),
    ] {
        let original = std::fs::read(fixture(rel)).unwrap();
        let l = layer(rel);
        let meta = CommitMeta {
            uuid: Some(uuid.into()),
            parent_uuid: parent.map(String::from),
            vsize: l.vsize(),
            user_tag: Vec::new(),
        };
        let mut out = Vec::new();
        let stats = compact(l.segments(), &[l.source().as_ref()], &mut out, &meta).unwrap();
        assert!(out == original, "{rel}: compact output differs");
        assert_eq!(stats.file_size, original.len() as u64);

        // The same through a file, with copy_file_range.
        let tmp = tempfile::tempfile().unwrap();
        compact_to_file(l.segments(), &[l.source().as_ref()], &tmp, &meta).unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut &tmp, &mut got).unwrap();
        assert!(got == original, "{rel}: compact_to_file output differs");
    }
}

/// Replaying the uncommitted writable layer's log (each record overrides earlier ones) and
/// compacting it must give exactly what `overlaybd-commit` wrote: this exercises upstream's
/// 32 KiB copy steps and index compression on raw, unmerged segments.
#[test]
fn committing_the_raw_writable_layer_matches_overlaybd_commit() {
    let index = std::fs::read(fixture("b_commit/rw/l1.index")).unwrap();
    let log: Vec<Segment> = decode_segments(&index[4096..])
        .unwrap()
        .into_iter()
        .filter(|s| !s.is_padding())
        .collect();
    assert_eq!(log.len(), 10);
    let layers: Vec<&[Segment]> = log.iter().map(std::slice::from_ref).collect();
    let segs: Vec<Segment> = merge_layers(&layers)
        .into_iter()
        .map(|s| Segment { tag: 0, ..s })
        .collect();
    let data = FileDevice::open(fixture("b_commit/rw/l1.data")).unwrap();
    let meta = CommitMeta {
        uuid: Some(UUID1.into()),
        vsize: VSIZE,
        ..Default::default()
    };
    let mut out = Vec::new();
    compact(&segs, &[&data], &mut out, &meta).unwrap();
    let original = std::fs::read(fixture("b_commit/layers/l1.lsmt")).unwrap();
    assert!(
        out == original,
        "commit of rw/l1 differs from layers/l1.lsmt"
    );
}

#[test]
fn sealed_writable_layer_opens_and_commits() {
    let exp = text("a_create/expected.txt");
    let want = value(&exp, "small64m.sealed");
    let sealed = layer("a_create/sealed/small64m.sealed");
    assert_eq!(
        sealed.segments(),
        dump(&exp, "index of sealed/small64m.sealed").as_slice()
    );
    assert_eq!(sealed.vsize(), VSIZE);
    assert_eq!(sealed.uuid(), UUID1);
    assert_eq!(sha_device(&sealed), want);

    let meta = CommitMeta {
        uuid: Some(UUID1.into()),
        vsize: VSIZE,
        ..Default::default()
    };
    let mut out = Vec::new();
    let stats = compact(
        sealed.segments(),
        &[sealed.source().as_ref()],
        &mut out,
        &meta,
    )
    .unwrap();
    assert_eq!(stats.data_bytes, (8 + 1 + 16) * 512);
    let committed = LsmtLayer::open(MemDevice::from_vec(out)).unwrap();
    assert_eq!(sha_device(&committed), want);
    assert_eq!(committed.uuid(), UUID1);
    // Neighbours 0+8 and 8+1 are contiguous in the output and joined.
    assert_eq!(
        committed.segments()[0],
        Segment {
            offset: 0,
            length: 9,
            moffset: 8,
            ..Default::default()
        }
    );
}

#[test]
fn layers_and_stacks_pass_the_read_conformance_suite() {
    let l1 = layer("b_commit/layers/l1.lsmt");
    let l2 = layer("b_commit/layers/l2.lsmt");
    let expected1 = l1.read_vec(0, VSIZE as usize).unwrap();
    obd_core::testing::check_read_at(&l1, &expected1, 512, 1);
    obd_core::testing::check_read_at(&l1, &expected1, 1, 2);
    let stack = LayerStack::from_layers(vec![l1, l2]).unwrap();
    let expected = stack.read_vec(0, VSIZE as usize).unwrap();
    assert_eq!(sha(&expected), value(&b_expected(), "device_after_layer2"));
    obd_core::testing::check_read_at(&stack, &expected, 512, 3);
    obd_core::testing::check_read_at(&stack, &expected, 1, 4);
    obd_core::testing::check_concurrent_reads(&stack, &expected, 512);
}
