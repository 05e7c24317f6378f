//! Sharing opened objects between devices without keeping them alive: a map from a key to a
//! `Weak` handle. The first device to need an object builds it; later ones get the same
//! `Arc` while anyone still holds it; when the last holder drops it, it is closed and the
//! next request builds it again.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use obd_core::Result;

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One key's slot. Its own lock serialises builders of the same key, so concurrent opens of
/// one layer build it once; different keys build in parallel.
type Slot<V> = Arc<Mutex<Option<Weak<V>>>>;

/// Key → `Weak<V>` with build-once semantics.
pub(crate) struct SharedCache<K, V: ?Sized> {
    map: Mutex<HashMap<K, Slot<V>>>,
    builds: AtomicU64,
}

impl<K: Eq + Hash + Clone, V: ?Sized> SharedCache<K, V> {
    pub(crate) fn new() -> Self {
        SharedCache {
            map: Mutex::new(HashMap::new()),
            builds: AtomicU64::new(0),
        }
    }

    /// The live object for `key`, or a new one from `build` (whose error is returned as is;
    /// nothing is cached then).
    pub(crate) fn get_or_try_insert(
        &self,
        key: &K,
        build: impl FnOnce() -> Result<Arc<V>>,
    ) -> Result<Arc<V>> {
        let slot = lock(&self.map).entry(key.clone()).or_default().clone();
        let mut held = lock(&slot);
        if let Some(v) = held.as_ref().and_then(Weak::upgrade) {
            return Ok(v);
        }
        let built = build();
        if let Ok(v) = &built {
            *held = Some(Arc::downgrade(v));
            self.builds.fetch_add(1, Ordering::Relaxed);
        }
        drop(held);
        drop(slot);
        self.prune();
        built
    }

    /// Drop slots whose object is gone and that no builder is using.
    fn prune(&self) {
        lock(&self.map).retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || slot
                    .try_lock()
                    .map_or(true, |w| w.as_ref().is_some_and(|w| w.strong_count() > 0))
        });
    }

    /// Objects currently alive.
    pub(crate) fn live(&self) -> usize {
        lock(&self.map)
            .values()
            .filter(|slot| {
                slot.try_lock()
                    .map_or(true, |w| w.as_ref().is_some_and(|w| w.strong_count() > 0))
            })
            .count()
    }

    /// How many objects have been built in total.
    pub(crate) fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_while_alive_then_rebuilds() {
        let c: SharedCache<u32, String> = SharedCache::new();
        let a = c
            .get_or_try_insert(&1, || Ok(Arc::new("a".into())))
            .unwrap();
        let b = c.get_or_try_insert(&1, || panic!("must reuse")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!((c.live(), c.builds()), (1, 1));
        drop((a, b));
        assert_eq!(c.live(), 0);
        let e = c.get_or_try_insert(&1, || Err(obd_core::Error::corrupt("x")));
        assert!(e.is_err());
        assert!(lock(&c.map).is_empty(), "failed and dead slots are pruned");
        let _d = c
            .get_or_try_insert(&1, || Ok(Arc::new("d".into())))
            .unwrap();
        assert_eq!(c.builds(), 2);
    }

    #[test]
    fn concurrent_requests_build_once() {
        let c: SharedCache<u32, u64> = SharedCache::new();
        let got: Vec<Arc<u64>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        c.get_or_try_insert(&7, || {
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            Ok(Arc::new(7))
                        })
                        .unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(got.iter().all(|g| Arc::ptr_eq(g, &got[0])));
        assert_eq!(c.builds(), 1);
    }
}
