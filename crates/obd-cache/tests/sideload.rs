//! Side-loading complete blobs into the cache directory (upstream #220).

mod common;

use common::*;
use obd_core::ReadAt;

#[test]
fn a_verified_side_loaded_blob_is_adopted_under_both_names() {
    let dir = tempfile::tempdir().unwrap();
    let a = random_bytes(1_000_000 + 17, 110);
    let b = random_bytes(70_000, 111);
    let (da, db) = (digest_of(&a), digest_of(&b));
    let cache = open(dir.path(), 16 << 20, 65536);
    // b is partly cached already; the side-loaded copy replaces that.
    cache
        .blob(&db, TestSource::new(b.clone()))
        .unwrap()
        .read_vec(0, 10)
        .unwrap();
    let top = dir.path().join(&da); // "sha256:<hex>"
    let sub = dir.path().join("sha256").join(&db[7..]);
    std::fs::write(&top, &a).unwrap();
    std::fs::write(&sub, &b).unwrap();
    for (d, data, path) in [(&da, &a, &top), (&db, &b, &sub)] {
        let src = TestSource::new(data.clone());
        let blob = cache.blob(d, src.clone()).unwrap();
        assert!(blob.is_complete());
        assert!(blob.read_vec(0, data.len()).unwrap() == *data);
        assert_eq!(src.reads(), 0, "{d}: adopted blob read from the source");
        assert!(!path.exists(), "the side-loaded file is moved into place");
        obd_core::testing::check_read_at(&*blob, data, 1, 3);
    }
    assert_eq!(cache.usage().used, (a.len() + b.len()) as u64);
    drop(cache);
    let entries = obd_cache::scan_dir(dir.path()).unwrap();
    assert!(entries.iter().all(|e| e.complete), "{entries:?}");
}

#[test]
fn a_mismatching_side_loaded_blob_is_rejected_and_fetched_normally() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(200_000, 112);
    let d = digest_of(&data);
    let cache = open(dir.path(), 16 << 20, 65536);
    let mut bad = data.clone();
    bad[123_456] ^= 1;
    let top = dir.path().join(&d);
    let sub = dir.path().join("sha256").join(&d[7..]);
    std::fs::write(&top, &bad).unwrap();
    std::fs::write(&sub, &data[..100_000]).unwrap(); // wrong size
    let src = TestSource::new(data.clone());
    let blob = cache.blob(&d, src.clone()).unwrap();
    assert!(!blob.is_complete());
    assert!(blob.read_vec(0, data.len()).unwrap() == data);
    assert_eq!(src.reads(), 1);
    assert!(!top.exists() && !sub.exists());
    let mut rej = top.into_os_string();
    rej.push(".rejected");
    assert_eq!(
        std::fs::read(&rej).unwrap(),
        bad,
        "rejected file kept for inspection"
    );
    let mut rej2 = sub.into_os_string();
    rej2.push(".rejected");
    assert!(std::path::Path::new(&rej2).exists());
    // Rejected files survive gc, clear removes them.
    cache.gc(Some(0)).unwrap();
    assert!(std::path::Path::new(&rej).exists());
    cache.clear().unwrap();
    assert!(!std::path::Path::new(&rej).exists());
}

#[test]
fn a_side_loaded_blob_larger_than_the_cache_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(300_000, 113);
    let d = digest_of(&data);
    let cache = open(dir.path(), 200_000, 65536);
    let top = dir.path().join(&d);
    std::fs::write(&top, &data).unwrap();
    let src = TestSource::new(data.clone());
    let blob = cache.blob(&d, src.clone()).unwrap();
    assert!(blob.read_vec(0, data.len()).unwrap() == data);
    assert!(src.reads() >= 1);
    assert!(top.exists(), "a valid file is not rejected");
    assert!(cache.usage().used <= 200_000);
}
