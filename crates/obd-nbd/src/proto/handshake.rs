//! Handshake messages: greeting, client flags, options and option replies.

use super::{
    FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, FLAG_NO_ZEROES, IHAVEOPT, INFO_BLOCK_SIZE,
    INFO_EXPORT, INFO_NAME, NBDMAGIC, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO, OPT_INFO, OPT_LIST,
    OPT_REPLY_MAGIC, OPT_STARTTLS, OPT_STRUCTURED_REPLY, ProtoError, Reader,
};

/// Bytes of an option header: magic, option code, data length.
pub const OPTION_HEADER_LEN: usize = 16;

/// The server greeting: `NBDMAGIC`, `IHAVEOPT`, handshake flags.
pub fn encode_greeting(handshake_flags: u16) -> [u8; 18] {
    let mut out = [0u8; 18];
    out[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    out[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    out[16..].copy_from_slice(&handshake_flags.to_be_bytes());
    out
}

/// What the client announced in its 32-bit flags word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientFlags {
    /// `NBD_FLAG_C_FIXED_NEWSTYLE`.
    pub fixed_newstyle: bool,
    /// `NBD_FLAG_C_NO_ZEROES`: omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
    pub no_zeroes: bool,
}

/// Decode the client flags (the first 4 bytes of `buf`), given the handshake flags the
/// server sent. Unknown bits, or `NO_ZEROES` when the server did not offer it, are an error
/// (the protocol then requires the server to drop the connection).
pub fn decode_client_flags(buf: &[u8], handshake_flags: u16) -> Result<ClientFlags, ProtoError> {
    let bits = Reader::new(buf).u32("client flags")?;
    let mut allowed = FLAG_C_FIXED_NEWSTYLE;
    if handshake_flags & FLAG_NO_ZEROES != 0 {
        allowed |= FLAG_C_NO_ZEROES;
    }
    if bits & !allowed != 0 {
        return Err(ProtoError::BadClientFlags {
            bits: bits & !allowed,
        });
    }
    Ok(ClientFlags {
        fixed_newstyle: bits & FLAG_C_FIXED_NEWSTYLE != 0,
        no_zeroes: bits & FLAG_C_NO_ZEROES != 0,
    })
}

/// The fixed part of a client option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// Option code (`NBD_OPT_*`).
    pub option: u32,
    /// Length of the option data that follows.
    pub length: u32,
}

/// Decode an option header from the first [`OPTION_HEADER_LEN`] bytes of `buf`.
pub fn decode_option_header(buf: &[u8]) -> Result<OptionHeader, ProtoError> {
    let mut r = Reader::new(buf);
    let magic = r.u64("option magic")?;
    if magic != IHAVEOPT {
        return Err(ProtoError::BadMagic {
            field: "option magic",
            at: 0,
            found: magic,
            expected: IHAVEOPT,
        });
    }
    Ok(OptionHeader {
        option: r.u32("option code")?,
        length: r.u32("option length")?,
    })
}

/// The data of `NBD_OPT_INFO` and `NBD_OPT_GO`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InfoRequest {
    /// Export name ("" = the default export).
    pub name: String,
    /// Information types the client asks for (`NBD_INFO_*`), in its order.
    pub requests: Vec<u16>,
}

/// A decoded client option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOption {
    /// `NBD_OPT_EXPORT_NAME` with the export name.
    ExportName(String),
    /// `NBD_OPT_ABORT`.
    Abort,
    /// `NBD_OPT_LIST`.
    List,
    /// `NBD_OPT_STARTTLS`.
    StartTls,
    /// `NBD_OPT_INFO`.
    Info(InfoRequest),
    /// `NBD_OPT_GO`.
    Go(InfoRequest),
    /// `NBD_OPT_STRUCTURED_REPLY`.
    StructuredReply,
    /// Any other option code; its data is not interpreted.
    Other(u32),
}

/// Decode the data of option `option`. Errors name the field and its byte position in the
/// option data; the server answers them with `NBD_REP_ERR_INVALID` (or, for
/// `NBD_OPT_EXPORT_NAME`, which cannot fail politely, by disconnecting).
pub fn parse_option(option: u32, data: &[u8]) -> Result<ClientOption, ProtoError> {
    let mut r = Reader::new(data);
    let opt = match option {
        OPT_EXPORT_NAME => ClientOption::ExportName(r.string(data.len(), "export name")?),
        // The spec gives NBD_OPT_ABORT no data; tolerate some rather than refuse to abort.
        OPT_ABORT => return Ok(ClientOption::Abort),
        OPT_LIST => ClientOption::List,
        OPT_STARTTLS => ClientOption::StartTls,
        OPT_STRUCTURED_REPLY => ClientOption::StructuredReply,
        OPT_INFO | OPT_GO => {
            let name_len = r.u32("export name length")?;
            if name_len as usize > super::MAX_STRING_LEN {
                return Err(ProtoError::TooLong {
                    field: "export name length",
                    at: 0,
                    len: u64::from(name_len),
                    max: super::MAX_STRING_LEN as u64,
                });
            }
            let name = r.string(name_len as usize, "export name")?;
            let count = r.u16("number of information requests")?;
            let mut requests = Vec::with_capacity(usize::from(count).min(r.remaining() / 2));
            for _ in 0..count {
                requests.push(r.u16("information request")?);
            }
            let req = InfoRequest { name, requests };
            if option == OPT_GO {
                ClientOption::Go(req)
            } else {
                ClientOption::Info(req)
            }
        }
        other => return Ok(ClientOption::Other(other)),
    };
    r.finish("option data")?;
    Ok(opt)
}

/// An option reply: magic, the option it answers, reply type, data length, data.
///
/// `data` longer than `u32::MAX` bytes cannot be sent; callers only pass short data.
pub fn encode_option_reply(option: u32, reply_type: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// Data of an `NBD_REP_SERVER` reply: name length and name.
pub fn encode_rep_server(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + name.len());
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// Data of an `NBD_REP_INFO` reply of type `NBD_INFO_EXPORT`: size and transmission flags.
pub fn encode_info_export(size: u64, transmission_flags: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&transmission_flags.to_be_bytes());
    out
}

/// Data of an `NBD_REP_INFO` reply of type `NBD_INFO_NAME`.
pub fn encode_info_name(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + name.len());
    out.extend_from_slice(&INFO_NAME.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// Data of an `NBD_REP_INFO` reply of type `NBD_INFO_BLOCK_SIZE`: minimum, preferred and
/// maximum block sizes.
pub fn encode_info_block_size(minimum: u32, preferred: u32, maximum: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    out.extend_from_slice(&minimum.to_be_bytes());
    out.extend_from_slice(&preferred.to_be_bytes());
    out.extend_from_slice(&maximum.to_be_bytes());
    out
}

/// The answer to `NBD_OPT_EXPORT_NAME`: size, transmission flags and, unless the client
/// negotiated `NO_ZEROES`, 124 zero bytes.
pub fn encode_export_name_reply(size: u64, transmission_flags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(134);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&transmission_flags.to_be_bytes());
    if !no_zeroes {
        out.resize(out.len() + 124, 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{FLAG_FIXED_NEWSTYLE, OPT_SET_META_CONTEXT};

    fn info_data(name: &[u8], reqs: &[u16]) -> Vec<u8> {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name);
        d.extend_from_slice(&(reqs.len() as u16).to_be_bytes());
        for r in reqs {
            d.extend_from_slice(&r.to_be_bytes());
        }
        d
    }

    #[test]
    fn greeting_bytes() {
        let g = encode_greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(&g[16..], &[0, 3]);
    }

    #[test]
    fn client_flags() {
        let both = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES;
        assert_eq!(
            decode_client_flags(&[0, 0, 0, 3], both).unwrap(),
            ClientFlags {
                fixed_newstyle: true,
                no_zeroes: true
            }
        );
        assert_eq!(
            decode_client_flags(&[0, 0, 0, 0], both).unwrap(),
            ClientFlags::default()
        );
        // NO_ZEROES not offered, unknown bits, short input.
        assert_eq!(
            decode_client_flags(&[0, 0, 0, 3], FLAG_FIXED_NEWSTYLE),
            Err(ProtoError::BadClientFlags { bits: 2 })
        );
        assert_eq!(
            decode_client_flags(&[0x80, 0, 0, 1], both),
            Err(ProtoError::BadClientFlags { bits: 0x8000_0000 })
        );
        let e = decode_client_flags(&[0, 0], both).unwrap_err();
        assert!(e.to_string().contains("client flags"), "{e}");
    }

    #[test]
    fn option_header() {
        let mut b = b"IHAVEOPT".to_vec();
        b.extend_from_slice(&7u32.to_be_bytes());
        b.extend_from_slice(&12u32.to_be_bytes());
        assert_eq!(
            decode_option_header(&b).unwrap(),
            OptionHeader {
                option: 7,
                length: 12
            }
        );
        b[0] = b'X';
        let e = decode_option_header(&b).unwrap_err();
        assert!(matches!(
            e,
            ProtoError::BadMagic {
                field: "option magic",
                ..
            }
        ));
        let e = decode_option_header(&b"IHAVEOPT\0\0\0\x07"[..]).unwrap_err();
        assert_eq!(
            e,
            ProtoError::Truncated {
                field: "option length",
                at: 12,
                need: 4,
                have: 0
            }
        );
    }

    #[test]
    fn options() {
        assert_eq!(
            parse_option(OPT_EXPORT_NAME, b"disk").unwrap(),
            ClientOption::ExportName("disk".into())
        );
        assert_eq!(
            parse_option(OPT_EXPORT_NAME, b"").unwrap(),
            ClientOption::ExportName(String::new())
        );
        assert!(matches!(
            parse_option(OPT_EXPORT_NAME, b"a\0b"),
            Err(ProtoError::BadString { at: 0, .. })
        ));
        assert!(matches!(
            parse_option(OPT_EXPORT_NAME, &[0xff, 0xfe]),
            Err(ProtoError::BadString { .. })
        ));
        assert!(matches!(
            parse_option(OPT_EXPORT_NAME, &[b'a'; 4097]),
            Err(ProtoError::TooLong { .. })
        ));
        assert_eq!(parse_option(OPT_LIST, b"").unwrap(), ClientOption::List);
        assert_eq!(
            parse_option(OPT_LIST, b"x"),
            Err(ProtoError::TrailingBytes {
                field: "option data",
                at: 0,
                extra: 1
            })
        );
        assert_eq!(
            parse_option(OPT_ABORT, b"junk").unwrap(),
            ClientOption::Abort
        );
        assert_eq!(
            parse_option(OPT_STRUCTURED_REPLY, b"").unwrap(),
            ClientOption::StructuredReply
        );
        assert_eq!(
            parse_option(OPT_SET_META_CONTEXT, b"whatever").unwrap(),
            ClientOption::Other(OPT_SET_META_CONTEXT)
        );
        assert_eq!(
            parse_option(OPT_GO, &info_data(b"disk", &[1, 3])).unwrap(),
            ClientOption::Go(InfoRequest {
                name: "disk".into(),
                requests: vec![1, 3]
            })
        );
        assert_eq!(
            parse_option(OPT_INFO, &info_data(b"", &[])).unwrap(),
            ClientOption::Info(InfoRequest::default())
        );
    }

    #[test]
    fn bad_info_requests_name_the_field() {
        // Name length past the end.
        let mut d = info_data(b"disk", &[]);
        d[3] = 50;
        let e = parse_option(OPT_GO, &d).unwrap_err();
        assert_eq!(
            e,
            ProtoError::Truncated {
                field: "export name",
                at: 4,
                need: 50,
                have: 6
            }
        );
        // Huge name length: refused before any allocation.
        let mut d = info_data(b"disk", &[]);
        d[0] = 0xff;
        assert!(matches!(
            parse_option(OPT_GO, &d),
            Err(ProtoError::TooLong {
                field: "export name length",
                ..
            })
        ));
        // Count says 3 requests, only 1 present.
        let mut d = info_data(b"d", &[1]);
        d[6] = 3;
        assert_eq!(
            parse_option(OPT_INFO, &d).unwrap_err(),
            ProtoError::Truncated {
                field: "information request",
                at: 9,
                need: 2,
                have: 0
            }
        );
        // Trailing garbage.
        let mut d = info_data(b"d", &[1]);
        d.push(0);
        assert!(matches!(
            parse_option(OPT_INFO, &d),
            Err(ProtoError::TrailingBytes {
                at: 9,
                extra: 1,
                ..
            })
        ));
        // Missing count.
        assert!(matches!(
            parse_option(OPT_GO, &[0, 0, 0, 0]),
            Err(ProtoError::Truncated {
                field: "number of information requests",
                ..
            })
        ));
    }

    #[test]
    fn replies() {
        let r = encode_option_reply(OPT_GO, 3, &[9, 9]);
        assert_eq!(&r[..8], &OPT_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&r[8..12], &7u32.to_be_bytes());
        assert_eq!(&r[12..16], &3u32.to_be_bytes());
        assert_eq!(&r[16..20], &2u32.to_be_bytes());
        assert_eq!(&r[20..], &[9, 9]);
        assert_eq!(encode_rep_server("ab"), vec![0, 0, 0, 2, b'a', b'b']);
        assert_eq!(
            encode_info_export(0x0102, 0x0304),
            vec![0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]
        );
        assert_eq!(encode_info_name("x"), vec![0, 1, b'x']);
        assert_eq!(
            encode_info_block_size(1, 4096, 1 << 25),
            vec![0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0, 2, 0, 0, 0]
        );
        let r = encode_export_name_reply(5, 1, false);
        assert_eq!(r.len(), 134);
        assert_eq!(&r[..10], &[0, 0, 0, 0, 0, 0, 0, 5, 0, 1]);
        assert!(r[10..].iter().all(|&b| b == 0));
        assert_eq!(encode_export_name_reply(5, 1, true).len(), 10);
    }
}
