//! Test helpers: a small NBD client written from the protocol text (independently of the
//! crate's `proto` module), a block device over it, and helpers to run external tools.
#![allow(dead_code)]

pub mod devices;
pub mod tools;

#[allow(unused_imports)]
pub use devices::{Probe, RemoteDevice};

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use obd_core::{BlockDevice, MemDevice};
use obd_nbd::{NbdAddr, NbdServer};

pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_SET_META_CONTEXT: u32 = 11;
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_ERR_UNSUP: u32 = 0x8000_0001;
pub const REP_ERR_INVALID: u32 = 0x8000_0003;
pub const REP_ERR_UNKNOWN: u32 = 0x8000_0006;
pub const REP_ERR_SHUTDOWN: u32 = 0x8000_0007;

pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const FLAG_FUA: u16 = 1;
pub const FLAG_NO_HOLE: u16 = 2;

pub const TF_HAS_FLAGS: u16 = 1;
pub const TF_READ_ONLY: u16 = 2;
pub const TF_FLUSH: u16 = 4;
pub const TF_FUA: u16 = 8;
pub const TF_TRIM: u16 = 32;
pub const TF_WRITE_ZEROES: u16 = 64;
pub const TF_MULTI_CONN: u16 = 256;

pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;

/// Either kind of client socket.
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    pub fn connect(addr: &NbdAddr) -> io::Result<Sock> {
        Ok(match addr {
            NbdAddr::Tcp(hp) => {
                let s = TcpStream::connect(hp.as_str())?;
                s.set_nodelay(true)?;
                Sock::Tcp(s)
            }
            NbdAddr::Unix(p) => Sock::Unix(UnixStream::connect(p)?),
        })
    }

    pub fn try_clone(&self) -> Sock {
        match self {
            Sock::Tcp(s) => Sock::Tcp(s.try_clone().unwrap()),
            Sock::Unix(s) => Sock::Unix(s.try_clone().unwrap()),
        }
    }

    pub fn set_read_timeout(&self, d: Option<std::time::Duration>) {
        match self {
            Sock::Tcp(s) => s.set_read_timeout(d).unwrap(),
            Sock::Unix(s) => s.set_read_timeout(d).unwrap(),
        }
    }

    /// True when the server closed the connection (reads hit end of stream or a reset).
    pub fn closed_by_peer(&mut self) -> bool {
        self.set_read_timeout(Some(std::time::Duration::from_secs(10)));
        let mut b = [0u8; 1];
        match self.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}
fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

/// One option reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptReply {
    pub option: u32,
    pub kind: u32,
    pub data: Vec<u8>,
}

/// What `NBD_OPT_INFO`/`NBD_OPT_GO` told us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportInfo {
    pub size: u64,
    pub flags: u16,
    pub name: Option<String>,
    pub block_size: Option<(u32, u32, u32)>,
}

/// The handshake phase.
pub struct Handshake {
    pub sock: Sock,
    pub handshake_flags: u16,
}

impl Handshake {
    /// Connect, check the greeting, send `client_flags`.
    pub fn start(addr: &NbdAddr, client_flags: u32) -> io::Result<Handshake> {
        let mut sock = Sock::connect(addr)?;
        sock.set_read_timeout(Some(std::time::Duration::from_secs(30)));
        let mut g = [0u8; 18];
        sock.read_exact(&mut g)?;
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        let handshake_flags = be16(&g[16..]);
        sock.write_all(&client_flags.to_be_bytes())?;
        Ok(Handshake {
            sock,
            handshake_flags,
        })
    }

    pub fn send_option(&mut self, option: u32, data: &[u8]) -> io::Result<()> {
        let mut m = b"IHAVEOPT".to_vec();
        m.extend_from_slice(&option.to_be_bytes());
        m.extend_from_slice(&(data.len() as u32).to_be_bytes());
        m.extend_from_slice(data);
        self.sock.write_all(&m)
    }

    pub fn read_reply(&mut self) -> io::Result<OptReply> {
        let mut h = [0u8; 20];
        self.sock.read_exact(&mut h)?;
        assert_eq!(be64(&h), 0x0003_e889_0455_65a9, "option reply magic");
        let mut data = vec![0u8; be32(&h[16..]) as usize];
        self.sock.read_exact(&mut data)?;
        Ok(OptReply {
            option: be32(&h[8..]),
            kind: be32(&h[12..]),
            data,
        })
    }

    /// Send an option and collect replies up to the final one (ACK or an error).
    pub fn exchange(&mut self, option: u32, data: &[u8]) -> io::Result<Vec<OptReply>> {
        self.send_option(option, data)?;
        let mut out = Vec::new();
        loop {
            let r = self.read_reply()?;
            assert_eq!(r.option, option, "reply is for the option sent");
            let last = r.kind == REP_ACK || r.kind & 0x8000_0000 != 0;
            out.push(r);
            if last {
                return Ok(out);
            }
        }
    }

    /// `NBD_OPT_INFO` / `NBD_OPT_GO` data.
    pub fn info_data(name: &str, requests: &[u16]) -> Vec<u8> {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&(requests.len() as u16).to_be_bytes());
        for r in requests {
            d.extend_from_slice(&r.to_be_bytes());
        }
        d
    }

    /// Run INFO or GO; `Err(reply)` carries the server's error reply.
    pub fn info(
        &mut self,
        option: u32,
        name: &str,
        requests: &[u16],
    ) -> io::Result<Result<ExportInfo, OptReply>> {
        let replies = self.exchange(option, &Self::info_data(name, requests))?;
        let last = replies.last().unwrap().clone();
        if last.kind != REP_ACK {
            return Ok(Err(last));
        }
        let mut info = ExportInfo::default();
        let mut got_export = false;
        for r in &replies[..replies.len() - 1] {
            assert_eq!(r.kind, REP_INFO, "{r:?}");
            let d = &r.data;
            match be16(d) {
                0 => {
                    assert_eq!(d.len(), 12);
                    info.size = be64(&d[2..]);
                    info.flags = be16(&d[10..]);
                    got_export = true;
                }
                1 => info.name = Some(String::from_utf8(d[2..].to_vec()).unwrap()),
                3 => {
                    assert_eq!(d.len(), 14);
                    info.block_size = Some((be32(&d[2..]), be32(&d[6..]), be32(&d[10..])));
                }
                t => panic!("unexpected info type {t}"),
            }
        }
        assert!(got_export, "NBD_INFO_EXPORT is mandatory");
        Ok(Ok(info))
    }

    /// Finish with `NBD_OPT_GO`.
    pub fn go(mut self, name: &str) -> io::Result<Result<Client, OptReply>> {
        Ok(self
            .info(OPT_GO, name, &[3])?
            .map(|i| Client::new(self.sock, i.size, i.flags)))
    }

    /// Finish with the old `NBD_OPT_EXPORT_NAME`.
    pub fn export_name(mut self, name: &str, no_zeroes: bool) -> io::Result<Client> {
        self.send_option(OPT_EXPORT_NAME, name.as_bytes())?;
        let mut b = [0u8; 10];
        self.sock.read_exact(&mut b)?;
        if !no_zeroes {
            let mut z = [1u8; 124];
            self.sock.read_exact(&mut z)?;
            assert!(z.iter().all(|&x| x == 0));
        }
        Ok(Client::new(self.sock, be64(&b), be16(&b[8..])))
    }
}

/// Connect with fixed newstyle + NO_ZEROES and `NBD_OPT_GO`.
pub fn connect(addr: &NbdAddr, name: &str) -> Client {
    Handshake::start(addr, 3)
        .unwrap()
        .go(name)
        .unwrap()
        .expect("NBD_OPT_GO succeeds")
}

/// The transmission phase, with requests possibly in flight.
pub struct Client {
    pub sock: Sock,
    pub size: u64,
    pub flags: u16,
    /// Cookie → read length, for replies still to come.
    pending: HashMap<u64, Option<u32>>,
    next_cookie: u64,
}

impl Client {
    /// The client for a handshake that just finished with a successful `NBD_OPT_GO`.
    pub fn after_go(h: Handshake, info: ExportInfo) -> Client {
        Client::new(h.sock, info.size, info.flags)
    }

    fn new(sock: Sock, size: u64, flags: u16) -> Client {
        Client {
            sock,
            size,
            flags,
            pending: HashMap::new(),
            next_cookie: 0x1000,
        }
    }

    /// Send a request header (and payload) with a fresh cookie; returns the cookie.
    pub fn send(&mut self, cmd: u16, flags: u16, off: u64, len: u32, payload: &[u8]) -> u64 {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        self.send_raw(cmd, flags, cookie, off, len, payload);
        cookie
    }

    pub fn send_raw(&mut self, cmd: u16, flags: u16, cookie: u64, off: u64, len: u32, data: &[u8]) {
        self.expect(cmd, cookie, len);
        let m = Self::request_bytes(cmd, flags, cookie, off, len, data);
        self.sock.write_all(&m).unwrap();
    }

    /// A request's wire form.
    pub fn request_bytes(
        cmd: u16,
        flags: u16,
        cookie: u64,
        off: u64,
        len: u32,
        data: &[u8],
    ) -> Vec<u8> {
        let mut m = 0x2560_9513u32.to_be_bytes().to_vec();
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&cmd.to_be_bytes());
        m.extend_from_slice(&cookie.to_be_bytes());
        m.extend_from_slice(&off.to_be_bytes());
        m.extend_from_slice(&len.to_be_bytes());
        m.extend_from_slice(data);
        m
    }

    /// Register a request sent by other means (e.g. from a [`Client::sender`] socket).
    pub fn expect(&mut self, cmd: u16, cookie: u64, len: u32) {
        if cmd != CMD_DISC {
            let read_len = (cmd == CMD_READ).then_some(len);
            assert!(
                self.pending.insert(cookie, read_len).is_none(),
                "cookie reused"
            );
        }
    }

    /// A second handle on the socket, to send from another thread while this one reads.
    pub fn sender(&self) -> Sock {
        self.sock.try_clone()
    }

    /// Receive one reply: (cookie, error, read data).
    pub fn recv(&mut self) -> io::Result<(u64, u32, Vec<u8>)> {
        let mut h = [0u8; 16];
        self.sock.read_exact(&mut h)?;
        assert_eq!(be32(&h), 0x6744_6698, "simple reply magic");
        let err = be32(&h[4..]);
        let cookie = be64(&h[8..]);
        let read_len = self
            .pending
            .remove(&cookie)
            .unwrap_or_else(|| panic!("reply for unknown cookie {cookie:#x}"));
        let mut data = Vec::new();
        if let (0, Some(n)) = (err, read_len) {
            data.resize(n as usize, 0);
            self.sock.read_exact(&mut data)?;
        }
        Ok((cookie, err, data))
    }

    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn call(
        &mut self,
        cmd: u16,
        flags: u16,
        off: u64,
        len: u32,
        data: &[u8],
    ) -> Result<Vec<u8>, u32> {
        let c = self.send(cmd, flags, off, len, data);
        let (cookie, err, data) = self.recv().unwrap();
        assert_eq!(cookie, c);
        if err == 0 { Ok(data) } else { Err(err) }
    }

    pub fn read(&mut self, off: u64, len: u32) -> Result<Vec<u8>, u32> {
        self.call(CMD_READ, 0, off, len, &[])
    }
    pub fn write(&mut self, off: u64, data: &[u8], flags: u16) -> Result<(), u32> {
        self.call(CMD_WRITE, flags, off, data.len() as u32, data)
            .map(drop)
    }
    pub fn flush(&mut self) -> Result<(), u32> {
        self.call(CMD_FLUSH, 0, 0, 0, &[]).map(drop)
    }
    pub fn trim(&mut self, off: u64, len: u32, flags: u16) -> Result<(), u32> {
        self.call(CMD_TRIM, flags, off, len, &[]).map(drop)
    }
    pub fn write_zeroes(&mut self, off: u64, len: u32, flags: u16) -> Result<(), u32> {
        self.call(CMD_WRITE_ZEROES, flags, off, len, &[]).map(drop)
    }
    /// Soft disconnect; returns whether the server then closed the connection.
    pub fn disc(mut self) -> bool {
        self.send_raw(CMD_DISC, 0, 0, 0, 0, &[]);
        self.sock.closed_by_peer()
    }
}

/// Deterministic test content.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A server for a memory device on a unix socket in a fresh temp dir.
pub fn mem_server(content: Vec<u8>, name: &str) -> (NbdServer, Arc<MemDevice>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let dev = Arc::new(MemDevice::from_vec(content));
    let addr = NbdAddr::Unix(dir.path().join("nbd.sock"));
    let server = NbdServer::start(dev.clone(), &addr, name).unwrap();
    (server, dev, dir)
}

/// Same on TCP loopback, port 0.
pub fn mem_server_tcp(content: Vec<u8>, name: &str) -> (NbdServer, Arc<MemDevice>) {
    let dev = Arc::new(MemDevice::from_vec(content));
    let addr = NbdAddr::Tcp("127.0.0.1:0".into());
    let server = NbdServer::start(dev.clone(), &addr, name).unwrap();
    (server, dev)
}

/// Serve `dev` on a unix socket in a fresh temp dir.
pub fn serve<D: BlockDevice + 'static>(dev: Arc<D>, name: &str) -> (NbdServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let addr = NbdAddr::Unix(dir.path().join("nbd.sock"));
    let server = NbdServer::start(dev, &addr, name).unwrap();
    (server, dir)
}
