//! overlaybd-rs NBD server: a virtual block device over the NBD protocol.
//!
//! [`NbdServer::start`] exports one [`obd_core::BlockDevice`] on a unix socket or a TCP
//! address ([`NbdAddr`]); `qemu-img`, `qemu-io`, `nbdinfo`, `nbdcopy`, `nbdfuse` and the
//! kernel client can use it. The server is a thin adapter: every request maps to one call on
//! the device seam.
//!
//! ```text
//!   accept thread ── connection thread (handshake, then reads requests)
//!                       └─ 4 workers: run requests on the device, send replies (by cookie)
//! ```
//!
//! Supported: fixed newstyle handshake with `NBD_OPT_EXPORT_NAME`, `NBD_OPT_INFO`,
//! `NBD_OPT_GO` (export, name and block size information), `NBD_OPT_LIST`,
//! `NBD_OPT_ABORT`; everything else (TLS, structured replies, metadata contexts) is refused
//! with `NBD_REP_ERR_UNSUP`, so clients fall back to simple replies. Commands: READ, WRITE,
//! FLUSH, TRIM, WRITE_ZEROES (with FUA and NO_HOLE) and DISC.
//!
//! [`proto`] is the wire format as a pure codec, shared with the fuzz target `nbd`.

#![forbid(unsafe_code)]

mod addr;
pub mod fuzzing;
mod negotiate;
pub mod proto;
mod server;
mod stream;
mod transmit;

pub use addr::NbdAddr;
pub use server::NbdServer;
