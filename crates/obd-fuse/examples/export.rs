//! Export an image file (or a fresh in-memory disk) as a FUSE file until stdin is closed or
//! the file is unmounted from outside.
//!
//! ```text
//! cargo run -p obd-fuse --example export -- BACKING.img MOUNT_PATH [--ro] [--direct-io]
//! cargo run -p obd-fuse --example export -- mem:64M MOUNT_PATH
//! ```

use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use obd_core::{BlockDevice, FileDevice, MemDevice, ReadOnly};
use obd_fuse::{FuseExport, FuseOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [backing, mount_path] = pos.as_slice() else {
        eprintln!("usage: export BACKING.img|mem:SIZE_MIB MOUNT_PATH [--ro] [--direct-io]");
        std::process::exit(2);
    };
    let ro = args.iter().any(|a| a == "--ro");
    let dev: Arc<dyn BlockDevice> = if let Some(mib) = backing.strip_prefix("mem:") {
        let mib: usize = mib.trim_end_matches('M').parse()?;
        Arc::new(MemDevice::zeroed(mib << 20))
    } else if ro {
        Arc::new(ReadOnly(FileDevice::open(backing)?))
    } else {
        Arc::new(FileDevice::open_rw(backing)?)
    };
    let opts = FuseOptions {
        direct_io: args.iter().any(|a| a == "--direct-io"),
        ..FuseOptions::default()
    };
    let export = FuseExport::mount(dev, Path::new(mount_path), &opts)?;
    println!(
        "exported at {} (close stdin to unmount)",
        export.path().display()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        let _ = tx.send(());
    });
    while rx.recv_timeout(Duration::from_millis(200)).is_err() {
        if export.is_finished() {
            println!("unmounted from outside");
            return Ok(());
        }
    }
    export.unmount()?;
    println!("unmounted");
    Ok(())
}
