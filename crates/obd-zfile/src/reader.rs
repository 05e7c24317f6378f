//! Random-access reads of a ZFile.

use std::cell::RefCell;
use std::path::Path;

use obd_core::{Error, ReadAt, Result, check_range};

use crate::codec::decompress_block;
use crate::jump::JumpTable;
use crate::layout::{
    Algorithm, HEADER_SIZE, MAX_INDEX_SIZE, ZFileHeader, block_crc, header_digest, index_crc,
    valid_block_size,
};

/// Most compressed bytes fetched from the source in one read (at least one block).
const MAX_FETCH: u64 = 1 << 20;

thread_local! {
    static FETCH_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static BLOCK_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` with this thread's reusable buffer, taken out so nested readers cannot clash.
fn with_buf<T>(
    key: &'static std::thread::LocalKey<RefCell<Vec<u8>>>,
    f: impl FnOnce(&mut Vec<u8>) -> T,
) -> T {
    let mut v = key.with(|c| c.take());
    let r = f(&mut v);
    key.with(|c| {
        let mut slot = c.borrow_mut();
        if v.capacity() > slot.capacity() {
            *slot = v;
        }
    });
    r
}

/// A summary of an open ZFile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZFileInfo {
    /// Uncompressed block size.
    pub block_size: u32,
    /// Compression algorithm.
    pub algorithm: Algorithm,
    /// Whether each block carries a CRC.
    pub verify: bool,
    /// Whether the header carries the final index location (flag bit 3).
    pub header_overwrite: bool,
    /// Whether the header/trailer digest and the index CRC are present (flag bit 4).
    pub digest: bool,
    /// Number of blocks.
    pub blocks: u64,
    /// Uncompressed size.
    pub original_size: u64,
    /// Size of the ZFile itself.
    pub compressed_size: u64,
    /// Byte offset of the index.
    pub index_offset: u64,
}

/// A ZFile opened for random-access reads; it is itself a [`ReadAt`] of the uncompressed
/// content, safe to share between threads.
///
/// Block CRCs are checked on every read when the file has them. Errors name the file
/// (the source's [`ReadAt::path`]) and the offset inside the ZFile of the bad structure.
#[derive(Debug)]
pub struct ZFileReader<R> {
    src: R,
    meta: ZFileHeader,
    algo: Algorithm,
    table: JumpTable,
}

impl<R: ReadAt> ZFileReader<R> {
    /// Open `src`: read and check the header, the trailer (unless the header was
    /// overwritten with the final index location) and the index.
    ///
    /// Flag bits above bit 5 are ignored (2021-era files hold garbage there); the digest and
    /// index CRC are checked only when flag bit 4 says they are present.
    pub fn open(src: R) -> Result<Self> {
        let r = Self::load(&src);
        match (r, src.path().map(Path::to_path_buf)) {
            (Ok((meta, algo, table)), _) => Ok(ZFileReader {
                src,
                meta,
                algo,
                table,
            }),
            (Err(e), Some(p)) => Err(e.with_path(p)),
            (Err(e), None) => Err(e),
        }
    }

    fn load(src: &R) -> Result<(ZFileHeader, Algorithm, JumpTable)> {
        let size = src.size();
        if size < HEADER_SIZE as u64 {
            return Err(Error::corrupt(format!(
                "file of {size} bytes is too small to be a ZFile (truncated?)"
            ))
            .at_offset(0));
        }
        let mut hb = [0u8; HEADER_SIZE];
        src.read_exact_at(&mut hb, 0)
            .map_err(|e| e.at_offset(0).context("reading ZFile header"))?;
        let header = ZFileHeader::decode(&hb).map_err(|e| e.at_offset(0))?;
        if !header.is_header() {
            return Err(Error::corrupt(format!(
                "ZFile header has flags {:#x} without the header bit",
                header.flags
            ))
            .at_offset(0));
        }
        check_digest(&header, &hb, "header", 0)?;
        let meta = if header.is_header_overwrite() {
            header
        } else {
            if !header.is_data_file() {
                return Err(Error::corrupt(format!(
                    "ZFile header has flags {:#x} without the data-file bit",
                    header.flags
                ))
                .at_offset(0));
            }
            let toff = trailer_offset(size)?;
            src.read_exact_at(&mut hb, toff)
                .map_err(|e| e.at_offset(toff).context("reading ZFile trailer"))?;
            let trailer = ZFileHeader::decode(&hb)
                .map_err(|e| e.at_offset(toff).context("ZFile trailer (truncated file?)"))?;
            if trailer.is_header() || !trailer.is_data_file() || !trailer.is_sealed() {
                return Err(Error::corrupt(format!(
                    "ZFile trailer has flags {:#x}; it must be a sealed data-file trailer",
                    trailer.flags
                ))
                .at_offset(toff));
            }
            check_digest(&trailer, &hb, "trailer", toff)?;
            trailer
        };
        let info_at = if meta.is_header() {
            0
        } else {
            size - HEADER_SIZE as u64
        };
        let algo = Algorithm::from_code(meta.algo).map_err(|e| e.at_offset(info_at))?;
        validate_meta(&meta, size).map_err(|e| e.at_offset(info_at))?;
        let table = load_index(src, &meta)?;
        Ok((meta, algo, table))
    }

    /// The header or trailer the file's layout was taken from.
    pub fn header(&self) -> &ZFileHeader {
        &self.meta
    }

    /// A summary of the file.
    pub fn info(&self) -> ZFileInfo {
        ZFileInfo {
            block_size: self.meta.block_size,
            algorithm: self.algo,
            verify: self.meta.has_block_crc(),
            header_overwrite: self.meta.is_header_overwrite(),
            digest: self.meta.has_digest(),
            blocks: self.table.blocks() as u64,
            original_size: self.meta.original_file_size,
            compressed_size: self.src.size(),
            index_offset: self.meta.index_offset,
        }
    }

    /// Uncompressed block size.
    pub fn block_size(&self) -> u32 {
        self.meta.block_size
    }
    /// Compression algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algo
    }
    /// Whether blocks carry CRCs.
    pub fn verify(&self) -> bool {
        self.meta.has_block_crc()
    }
    /// Whether the header was overwritten with the final index location.
    pub fn header_overwrite(&self) -> bool {
        self.meta.is_header_overwrite()
    }
    /// Number of blocks.
    pub fn block_count(&self) -> u64 {
        self.table.blocks() as u64
    }
    /// Size of the ZFile itself.
    pub fn compressed_size(&self) -> u64 {
        self.src.size()
    }
    /// The block index.
    pub fn jump_table(&self) -> &JumpTable {
        &self.table
    }
    /// The underlying source.
    pub fn inner(&self) -> &R {
        &self.src
    }
    /// Unwrap the underlying source.
    pub fn into_inner(self) -> R {
        self.src
    }

    /// Check the CRC of every block, as `overlaybd-zfile --verify` does (blocks are not
    /// decompressed). Fails with [`obd_core::ErrorKind::Unsupported`] if the file has no
    /// per-block CRCs, and with [`obd_core::ErrorKind::Checksum`] naming the first bad block.
    pub fn verify_all(&self) -> Result<()> {
        if !self.verify() {
            return Err(self.located(
                Error::unsupported("ZFile has no per-block CRCs (verify=0); cannot verify"),
                0,
            ));
        }
        with_buf(&FETCH_BUF, |fetch| {
            let n = self.table.blocks();
            let mut b = 0;
            while b < n {
                let e = self.fetch_end(b, n);
                let start = self.fetch(fetch, b, e)?;
                for i in b..e {
                    let at = (self.table.offset(i) - start) as usize;
                    let stored = &fetch[at..at + self.table.len(i) as usize];
                    self.check_crc(i, stored)?;
                }
                b = e;
            }
            Ok(())
        })
    }

    fn located(&self, e: Error, offset: u64) -> Error {
        let e = e.at_offset(offset);
        match self.src.path() {
            Some(p) => e.with_path(p),
            None => e,
        }
    }

    /// First block after `b` not to include in a fetch starting at `b` (bounded by `limit`).
    fn fetch_end(&self, b: usize, limit: usize) -> usize {
        let start = self.table.offset(b);
        let mut e = b + 1;
        while e < limit && self.table.offset(e + 1) - start <= MAX_FETCH {
            e += 1;
        }
        e
    }

    /// Read the stored bytes of blocks `[b, e)` into `fetch`; returns their file offset.
    fn fetch(&self, fetch: &mut Vec<u8>, b: usize, e: usize) -> Result<u64> {
        let start = self.table.offset(b);
        let n = (self.table.offset(e) - start) as usize;
        if fetch.len() < n {
            fetch.resize(n, 0);
        }
        self.src
            .read_exact_at(&mut fetch[..n], start)
            .map_err(|err| {
                self.located(
                    err.context(format!("reading compressed blocks {b}..{e}")),
                    start,
                )
            })?;
        Ok(start)
    }

    /// Check block `i`'s CRC when the file has them; returns the compressed bytes.
    fn check_crc<'a>(&self, i: usize, stored: &'a [u8]) -> Result<&'a [u8]> {
        if !self.verify() {
            return Ok(stored);
        }
        // The jump table guarantees every entry is longer than 4 bytes.
        let (data, tail) = stored.split_at(stored.len().saturating_sub(4));
        let want = tail
            .iter()
            .rev()
            .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
        let got = block_crc(data);
        if got != want {
            return Err(self.located(
                Error::checksum(format!(
                    "block {i}: CRC mismatch (stored {want:#010x}, computed {got:#010x})"
                )),
                self.table.offset(i),
            ));
        }
        Ok(data)
    }

    fn read_blocks(&self, buf: &mut [u8], offset: u64, fetch: &mut Vec<u8>) -> Result<()> {
        let bs = u64::from(self.meta.block_size);
        let orig = self.meta.original_file_size;
        let end = offset + buf.len() as u64;
        let first = (offset / bs) as usize;
        let last = ((end - 1) / bs) as usize;
        let mut b = first;
        while b <= last {
            let e = self.fetch_end(b, last + 1);
            let start = self.fetch(fetch, b, e)?;
            for i in b..e {
                let at = (self.table.offset(i) - start) as usize;
                let stored = &fetch[at..at + self.table.len(i) as usize];
                let data = self.check_crc(i, stored)?;
                let ustart = i as u64 * bs;
                let ulen = bs.min(orig - ustart);
                let lo = ustart.max(offset);
                let hi = (ustart + ulen).min(end);
                let dst = &mut buf[(lo - offset) as usize..(hi - offset) as usize];
                let r = if lo == ustart && hi == ustart + ulen {
                    decompress_block(self.algo, data, dst)
                } else {
                    with_buf(&BLOCK_BUF, |block| {
                        if block.len() < ulen as usize {
                            block.resize(ulen as usize, 0);
                        }
                        decompress_block(self.algo, data, &mut block[..ulen as usize])?;
                        dst.copy_from_slice(&block[(lo - ustart) as usize..(hi - ustart) as usize]);
                        Ok(())
                    })
                };
                r.map_err(|err| {
                    self.located(err.context(format!("block {i}")), self.table.offset(i))
                })?;
            }
            b = e;
        }
        Ok(())
    }
}

fn trailer_offset(size: u64) -> Result<u64> {
    if size < 2 * HEADER_SIZE as u64 {
        return Err(Error::corrupt(format!(
            "file of {size} bytes has no room for a ZFile trailer (truncated?)"
        ))
        .at_offset(size));
    }
    Ok(size - HEADER_SIZE as u64)
}

fn check_digest(h: &ZFileHeader, bytes: &[u8; HEADER_SIZE], what: &str, at: u64) -> Result<()> {
    if !h.has_digest() {
        return Ok(());
    }
    let got = header_digest(bytes);
    if got != h.digest {
        return Err(Error::checksum(format!(
            "ZFile {what} digest mismatch (stored {:#010x}, computed {got:#010x})",
            h.digest
        ))
        .at_offset(at));
    }
    Ok(())
}

fn validate_meta(m: &ZFileHeader, size: u64) -> Result<()> {
    if !valid_block_size(m.block_size) {
        return Err(Error::unsupported(format!(
            "ZFile block size {} is not supported (4, 8, 16, 32 or 64 KiB)",
            m.block_size
        )));
    }
    if m.use_dict != 0 || m.dict_size != 0 {
        return Err(Error::unsupported(format!(
            "ZFile compression dictionaries are not supported (use_dict {}, dict_size {})",
            m.use_dict, m.dict_size
        )));
    }
    if m.index_size > MAX_INDEX_SIZE {
        return Err(Error::corrupt(format!(
            "ZFile index of {} entries exceeds the limit of {MAX_INDEX_SIZE}",
            m.index_size
        )));
    }
    let blocks = m.original_file_size.div_ceil(u64::from(m.block_size));
    if blocks != m.index_size {
        return Err(Error::corrupt(format!(
            "ZFile index has {} entries but {} bytes in {}-byte blocks need {blocks}",
            m.index_size, m.original_file_size, m.block_size
        )));
    }
    let limit = trailer_offset(size)?;
    let index_end = m.index_offset.checked_add(m.index_size * 4);
    if m.index_offset < m.data_offset() || index_end.is_none_or(|e| e > limit) {
        return Err(Error::corrupt(format!(
            "ZFile index of {} entries at {} does not fit between the data start {} and the \
             trailer at {limit} (truncated file?)",
            m.index_size,
            m.index_offset,
            m.data_offset()
        )));
    }
    Ok(())
}

fn load_index<R: ReadAt>(src: &R, m: &ZFileHeader) -> Result<JumpTable> {
    let n = m.index_size as usize;
    let mut raw = vec![0u8; n * 4];
    src.read_exact_at(&mut raw, m.index_offset)
        .map_err(|e| e.at_offset(m.index_offset).context("reading ZFile index"))?;
    let entries: Vec<u32> = raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    drop(raw);
    if m.has_digest() {
        let got = index_crc(&entries);
        if got != m.index_crc {
            return Err(Error::checksum(format!(
                "ZFile index CRC mismatch (stored {:#010x}, computed {got:#010x})",
                m.index_crc
            ))
            .at_offset(m.index_offset));
        }
    }
    let table = JumpTable::build(&entries, m.data_offset(), m.block_size, m.has_block_crc())
        .map_err(|(i, e)| e.at_offset(m.index_offset + 4 * i as u64))?;
    if table.end() != m.index_offset {
        return Err(Error::corrupt(format!(
            "ZFile blocks end at {} but the index starts at {}",
            table.end(),
            m.index_offset
        ))
        .at_offset(m.index_offset));
    }
    Ok(table)
}

impl<R: ReadAt> ReadAt for ZFileReader<R> {
    fn size(&self) -> u64 {
        self.meta.original_file_size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size(), offset, buf.len() as u64).map_err(|e| match self.src.path() {
            Some(p) => e.with_path(p),
            None => e,
        })?;
        if buf.is_empty() {
            return Ok(());
        }
        with_buf(&FETCH_BUF, |fetch| self.read_blocks(buf, offset, fetch))
    }

    fn path(&self) -> Option<&Path> {
        self.src.path()
    }
}
