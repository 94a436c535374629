//! The PROXY protocol header (HAProxy's spec, versions 1 and 2): what a
//! TCP proxy sends before anything else to say whose connection it is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A version 1 header is at most 107 bytes (the spec's bound).
const V1_MAX: usize = 107;
/// The most a version 2 header may say after its 16-byte start: the
/// addresses and any TLVs. Longer ones are refused rather than buffered.
const V2_MAX_BODY: usize = 512;

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proxied {
    /// The connection is this client's.
    Client(SocketAddr),
    /// The proxy's own connection (a health check: `LOCAL`, `UNKNOWN`, or
    /// not TCP): the socket's peer is the client.
    Local,
}

/// Why bytes are not a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyError {
    /// Neither signature: the peer sent something else first.
    Missing,
    Malformed,
    TooLong,
}

/// Reads a PROXY header from the start of `buf`: the header and its
/// length, or `None` while more bytes are needed.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Proxied, usize)>, ProxyError> {
    let prefix = |sig: &[u8]| {
        buf.len().min(sig.len()) > 0 && sig.starts_with(&buf[..buf.len().min(sig.len())])
    };
    if prefix(b"PROXY ") {
        return parse_v1(buf);
    }
    if prefix(&V2_SIGNATURE) {
        return parse_v2(buf);
    }
    if buf.is_empty() {
        return Ok(None);
    }
    Err(ProxyError::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Proxied, usize)>, ProxyError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::TooLong)
        } else {
            Ok(None)
        };
    };
    if end + 2 > V1_MAX {
        return Err(ProxyError::TooLong);
    }
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError::Malformed)?;
    let fields: Vec<&str> = line.split(' ').collect();
    let proxied = match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Proxied::Local,
        ["PROXY", family @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src.parse().map_err(|_| ProxyError::Malformed)?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return Err(ProxyError::Malformed);
            }
            let port: u16 = sport.parse().map_err(|_| ProxyError::Malformed)?;
            Proxied::Client(SocketAddr::new(ip, port))
        }
        _ => return Err(ProxyError::Malformed),
    };
    Ok(Some((proxied, end + 2)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Proxied, usize)>, ProxyError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let (ver_cmd, family) = (buf[12], buf[13]);
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 2 || ver_cmd & 0xf > 1 {
        return Err(ProxyError::Malformed);
    }
    if len > V2_MAX_BODY {
        return Err(ProxyError::TooLong);
    }
    if buf.len() < 16 + len {
        return Ok(None);
    }
    let body = &buf[16..16 + len];
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    let proxied = match (ver_cmd & 0xf, family) {
        (0, _) => Proxied::Local,
        // TCP over IPv4: source, destination, source port, destination port.
        (1, 0x11) if len >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Proxied::Client(SocketAddr::new(ip.into(), port(8)))
        }
        (1, 0x21) if len >= 36 => {
            let octets: [u8; 16] = body[..16].try_into().expect("16 bytes");
            Proxied::Client(SocketAddr::new(Ipv6Addr::from(octets).into(), port(32)))
        }
        (1, 0x11 | 0x21) => return Err(ProxyError::Malformed),
        // UNSPEC, UDP, unix sockets: nothing we can call a client address.
        (1, _) => Proxied::Local,
        _ => unreachable!("command checked above"),
    };
    Ok(Some((proxied, 16 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend([0x20 | cmd, family]);
        h.extend((body.len() as u16).to_be_bytes());
        h.extend(body);
        h
    }

    #[test]
    fn version_1_headers() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /";
        assert_eq!(
            parse(h),
            Ok(Some((
                Proxied::Client("192.0.2.1:56324".parse().unwrap()),
                45
            )))
        );
        let h6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80\r\n";
        assert_eq!(
            parse(h6),
            Ok(Some((
                Proxied::Client("[2001:db8::1]:4000".parse().unwrap()),
                h6.len()
            )))
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(Some((Proxied::Local, 15))));
        for i in 0..h.len() - 5 {
            if !h[..i].windows(2).any(|w| w == b"\r\n") {
                assert_eq!(parse(&h[..i]), Ok(None), "{i} bytes are a start");
            }
        }
        assert_eq!(
            parse(b"PROXY TCP4 192.0.2.1 x 1 2\r\n"),
            Ok(Some((Proxied::Client("192.0.2.1:1".parse().unwrap()), 28)))
        );
        for bad in [
            &b"PROXY TCP4 2001:db8::1 ::1 1 2\r\n"[..],
            b"PROXY TCP4 192.0.2.1 198.51.100.2 99999 443\r\n",
            b"PROXY TCP9 a b 1 2\r\n",
            b"PROXY TCP4 192.0.2.1\r\n",
        ] {
            assert_eq!(parse(bad), Err(ProxyError::Malformed), "{bad:?}");
        }
        assert_eq!(parse(&[b'P'; 1][..]), Ok(None));
        let mut long = b"PROXY ".to_vec();
        long.resize(200, b'x');
        assert_eq!(parse(&long), Err(ProxyError::TooLong));
    }

    #[test]
    fn version_2_headers() {
        let mut body = vec![192, 0, 2, 1, 198, 51, 100, 2];
        body.extend(56324u16.to_be_bytes());
        body.extend(443u16.to_be_bytes());
        let h = v2(1, 0x11, &body);
        assert_eq!(
            parse(&h),
            Ok(Some((
                Proxied::Client("192.0.2.1:56324".parse().unwrap()),
                28
            )))
        );
        for i in 0..h.len() {
            assert_eq!(parse(&h[..i]), Ok(None), "{i} bytes are a start");
        }
        let mut body6 = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        body6.extend([0; 16]);
        body6.extend(4000u16.to_be_bytes());
        body6.extend(80u16.to_be_bytes());
        body6.extend([1, 0, 1, 0]); // a TLV, skipped
        assert_eq!(
            parse(&v2(1, 0x21, &body6)),
            Ok(Some((
                Proxied::Client("[2001:db8::1]:4000".parse().unwrap()),
                16 + 40
            )))
        );
        assert_eq!(
            parse(&v2(0, 0, &[])),
            Ok(Some((Proxied::Local, 16))),
            "LOCAL"
        );
        assert_eq!(
            parse(&v2(1, 0x12, &body)),
            Ok(Some((Proxied::Local, 28))),
            "UDP"
        );
        assert_eq!(parse(&v2(1, 0x11, &body[..4])), Err(ProxyError::Malformed));
        assert_eq!(parse(&v2(7, 0x11, &body)), Err(ProxyError::Malformed));
        assert_eq!(parse(&v2(1, 0x11, &vec![0; 600])), Err(ProxyError::TooLong));
    }

    #[test]
    fn anything_else_first_is_missing_the_header() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::Missing));
        assert_eq!(
            parse(b"\x16\x03\x01"),
            Err(ProxyError::Missing),
            "a TLS hello"
        );
        assert_eq!(parse(b""), Ok(None));
    }
}
