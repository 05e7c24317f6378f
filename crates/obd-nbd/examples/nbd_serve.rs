//! Serve a raw image file over NBD until Enter is pressed (or stdin closes).
//!
//! ```sh
//! cargo run -p obd-nbd --example nbd_serve -- disk.img unix:/tmp/disk.sock [NAME] [--ro]
//! RUST_LOG=debug cargo run -p obd-nbd --example nbd_serve -- disk.img tcp:127.0.0.1:10809
//! nbdinfo 'nbd+unix:///NAME?socket=/tmp/disk.sock'
//! ```

use std::sync::Arc;

use obd_core::{BlockDevice, FileDevice};
use obd_nbd::{NbdAddr, NbdServer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let read_only = args.iter().any(|a| a == "--ro");
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [file, addr, rest @ ..] = pos.as_slice() else {
        return Err("usage: nbd_serve FILE unix:/path|tcp:host:port [NAME] [--ro]".into());
    };
    let name = rest.first().map_or("", |s| s.as_str());
    let dev: Arc<dyn BlockDevice> = if read_only {
        Arc::new(FileDevice::open(file)?)
    } else {
        Arc::new(FileDevice::open_rw(file)?)
    };
    let addr: NbdAddr = addr.parse()?;
    let server = NbdServer::start(dev, &addr, name)?;
    eprintln!(
        "serving {file} as {:?} at {}",
        name,
        server.addr().uri(name)
    );
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    server.shutdown()?;
    Ok(())
}
