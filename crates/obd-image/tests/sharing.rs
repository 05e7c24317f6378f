//! 64 devices of one 64-layer image hold each layer, and the merged index, once.

mod common;

use std::sync::Arc;

use common::*;
use obd_core::ReadAt;
use obd_image::{GlobalConfig, ImageDevice, ImageService, ServiceStats};
use serde_json::json;

const LAYERS: usize = 64;
const DEVICES: usize = 64;
const SIZE: u64 = 1 << 20;

#[test]
fn devices_of_one_image_share_layers_and_the_merged_stack() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut model = vec![0u8; SIZE as usize];
    let files: Vec<_> = (0..LAYERS)
        .map(|i| committed_layer(d, &format!("l{i}"), &mut model, i as u64))
        .collect();
    let lowers: Vec<_> = files.iter().map(|f| json!({ "file": f })).collect();
    // Half of the devices read-only, half with their own writable upper.
    let configs: Vec<_> = (0..DEVICES)
        .map(|n| {
            let mut cfg = json!({ "lowers": lowers });
            if n % 2 == 1 {
                let (ud, ui) = create_upper(d, &format!("u{n}"), SIZE, n % 4 == 1);
                cfg["upper"] = json!({"data": ud, "index": ui});
            }
            write_config(d, &format!("dev{n}.json"), &cfg)
        })
        .collect();
    let svc = ImageService::new(GlobalConfig::default());
    // Opened from 8 threads at once: still one build of each layer and of the stack.
    let devices: Vec<ImageDevice> = std::thread::scope(|s| {
        let hs: Vec<_> = configs
            .chunks(DEVICES / 8)
            .map(|chunk| {
                let svc = &svc;
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|c| svc.open(c).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        svc.stats(),
        ServiceStats {
            open_layers: LAYERS,
            open_stacks: 1,
            layer_opens: LAYERS as u64,
            stack_opens: 1,
        }
    );
    let first = devices[0].stack().unwrap();
    let sources = devices[0].lower_sources();
    assert_eq!(sources.len(), LAYERS);
    for dev in &devices {
        assert!(
            Arc::ptr_eq(dev.stack().unwrap(), first),
            "merged stack not shared"
        );
        for (a, b) in dev.lower_sources().iter().zip(&sources) {
            assert!(Arc::ptr_eq(a, b), "layer not shared");
        }
        assert!(read_all(dev) == model);
    }
    // A second image sharing the bottom 32 layers: new stack, same layer objects.
    let mut m2 = model.clone();
    let top = committed_layer(d, "other-top", &mut m2, 1000);
    let mut lowers2: Vec<_> = files[..32].iter().map(|f| json!({ "file": f })).collect();
    lowers2.push(json!({ "file": top }));
    let cfg2 = write_config(d, "other.json", &json!({ "lowers": lowers2 }));
    let other = svc.open(&cfg2).unwrap();
    assert!(!Arc::ptr_eq(other.stack().unwrap(), first));
    let src2 = other.lower_sources();
    for i in 0..32 {
        assert!(Arc::ptr_eq(&src2[i], &sources[i]), "shared base layer {i}");
    }
    let s = svc.stats();
    assert_eq!(
        (s.open_layers, s.open_stacks, s.layer_opens),
        (LAYERS + 1, 2, LAYERS as u64 + 1)
    );

    // Everything closes when the last device goes; reopening builds afresh.
    drop((devices, other, sources, src2));
    let s = svc.stats();
    assert_eq!((s.open_layers, s.open_stacks), (0, 0), "{s:?}");
    let again = svc.open(&configs[0]).unwrap();
    assert_eq!(svc.stats().stack_opens, 3);
    assert_eq!(again.size(), SIZE);
}
