//! overlaybd-rs image service: device and global configs, layer sources, opening a device
//! stack.
//!
//! ```text
//!   config.v1.json ──DeviceConfig──> ImageService::open ──> ImageDevice (BlockDevice)
//!   overlaybd.json ──GlobalConfig──┘        │
//!                                  lowers: file | dir | RemoteSource ─> unwrap_blob ─> LSMT
//!                                  upper:  append or sparse WritableLayer
//! ```
//!
//! - [`config`]: both JSON configs, with upstream's defaults, legacy keys, warnings for
//!   unknown fields and errors naming file and JSON path.
//! - [`source`]: where a lower's bytes come from; [`RemoteSource`] is the seam the registry
//!   client plugs into.
//! - [`blob`]: tar / ZFile unwrapping and LSMT file kinds.
//! - [`ImageService`] / [`ImageDevice`]: opening devices, sharing layers and merged indexes
//!   between devices.
//! - [`write_result`]: the `resultFile` protocol. [`mkfs`]: ext4 on a new layer.

#![forbid(unsafe_code)]

pub mod blob;
mod cache;
pub mod config;
mod device;
#[doc(hidden)]
pub mod fuzzing;
mod heal;
pub mod mkfs;
pub mod prefetch;
pub mod remote;
mod result;
mod service;
pub mod source;
mod upper;

pub use blob::{Blob, open_blob, unwrap_blob};
pub use config::Loaded;
pub use config::device::{DeviceConfig, LowerConfig, UpperConfig};
pub use config::global::GlobalConfig;
pub use device::{DeviceInfo, ImageDevice};
pub use remote::RegistrySource;
pub use result::write_result;
pub use service::{ImageService, LayerKey, ServiceStats};
pub use source::{LayerLocation, RemoteBlob, RemoteLayerStatus, RemoteSource};
pub use upper::{open_writable, open_writable_with_warnings};
