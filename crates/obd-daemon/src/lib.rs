//! The overlaybd-rs daemon: it reads the global config, attaches devices described by
//! `config.v1.json` files, exports each one as a FUSE file or an NBD server, and serves a
//! small control API on a unix socket.
//!
//! ```text
//!  obd attach / detach / list ──HTTP on unix socket──► api ──► Manager ──► obd_image::ImageService
//!                                                                 │             (layers, stack, upper)
//!                                                                 ├──► obd_fuse::FuseExport
//!                                                                 └──► obd_nbd::NbdServer
//! ```
//!
//! Attached devices are recorded in the state directory, so a daemon restarted after a crash
//! brings the same exports back. SIGTERM/SIGINT flush every upper layer and unmount cleanly.

#![deny(unsafe_code)]

pub mod api;
pub mod client;
pub mod logging;
mod malloc;
pub mod manager;
pub mod metrics;
pub mod protocol;
pub mod serve;
pub mod state;

pub use client::{Client, ensure_daemon};
pub use protocol::{AttachRequest, DeviceEntry, ExportOptions, ExportSpec, Health};
pub use serve::{ServeOptions, serve};
