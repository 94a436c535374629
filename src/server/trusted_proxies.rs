//! [`TrustedProxies`]: which peers are proxies (load balancers, reverse
//! proxies) whose word about the client's address the server takes, and how
//! they give it: `X-Forwarded-For` / `Forwarded` (RFC 7239) request headers,
//! or a PROXY protocol header before anything else on the connection.
//!
//! A peer that is not trusted is its own client, whatever headers it sends:
//! anyone can write `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::protocol::Request;

/// A network: an address and how many leading bits of it count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    addr: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// Whether `ip` is in the network (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNetwork {
    type Err = String;

    /// `10.0.0.0/8`, `2001:db8::/32`, or one address (`192.0.2.7`).
    fn from_str(s: &str) -> Result<IpNetwork, String> {
        let bad = || format!("not an address or network: {s:?} (use e.g. 10.0.0.0/8 or ::1)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(IpNetwork { addr, prefix })
    }
}

/// How trusted proxies tell the client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyHeader {
    /// `Forwarded: for=...` (RFC 7239) or, without it, `X-Forwarded-For`
    /// in the upgrade request (nginx, most HTTP load balancers).
    #[default]
    Forwarded,
    /// A PROXY protocol header, version 1 or 2, before anything else on
    /// the connection (HAProxy, AWS NLB, nginx's `proxy_protocol`), before
    /// the TLS handshake when the server terminates TLS. A trusted peer must
    /// send one.
    ProxyProtocol,
}

/// The proxies whose word the server takes. Empty (the default): none, and
/// every client is the socket's peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    /// Peers in these networks are proxies.
    pub networks: Vec<IpNetwork>,
    /// How they tell the client's address.
    pub header: ProxyHeader,
}

impl TrustedProxies {
    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// A connection from `peer` must start with a PROXY protocol header.
    pub(crate) fn expects_proxy_protocol(&self, peer: SocketAddr) -> bool {
        self.header == ProxyHeader::ProxyProtocol && self.trusts(peer.ip())
    }

    /// The client behind `peer`, from the request's forwarding headers when
    /// `peer` is trusted: walking the chain from the nearest hop, the first
    /// address that is not itself a trusted proxy. The port is 0 when the
    /// header gives none. A chain that cannot be read leaves `peer`.
    pub(crate) fn client_from_headers(&self, peer: SocketAddr, req: &Request) -> SocketAddr {
        if self.header != ProxyHeader::Forwarded || !self.trusts(peer.ip()) {
            return peer;
        }
        let chain = match forwarded_chain(req, "forwarded", forwarded_for) {
            Some(c) if !c.is_empty() => Some(c),
            _ => forwarded_chain(req, "x-forwarded-for", |e| parse_node(e.trim())),
        };
        let Some(chain) = chain else {
            return peer;
        };
        let mut client = peer;
        for hop in chain.iter().rev() {
            match hop {
                Some(addr) => {
                    client = *addr;
                    if !self.trusts(addr.ip()) {
                        break;
                    }
                }
                // "unknown" or an obfuscated name: nothing to learn past it.
                None => break,
            }
        }
        client
    }
}

/// Every element of every `name` header, in order, each read by `element`
/// (`None` for one that names no address). `None` if the header is absent.
fn forwarded_chain(
    req: &Request,
    name: &str,
    element: fn(&str) -> Option<SocketAddr>,
) -> Option<Vec<Option<SocketAddr>>> {
    let mut chain: Option<Vec<Option<SocketAddr>>> = None;
    for (n, v) in req.headers() {
        if !n.eq_ignore_ascii_case(name) {
            continue;
        }
        let v = std::str::from_utf8(v).ok()?;
        let list = chain.get_or_insert_with(Vec::new);
        list.extend(v.split(',').map(element));
    }
    chain
}

/// The `for=` of one `Forwarded` element (`for=192.0.2.60;proto=http`).
fn forwarded_for(element: &str) -> Option<SocketAddr> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        parse_node(v.trim().trim_matches('"'))
    })
}

/// `192.0.2.60`, `192.0.2.60:4711`, `[2001:db8::1]:4711`, `2001:db8::1`.
fn parse_node(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let ip = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::HandshakeLimits;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_contain() {
        assert!(net("10.0.0.0/8").contains("10.200.1.1".parse().unwrap()));
        assert!(!net("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        assert!(net("192.0.2.7").contains("192.0.2.7".parse().unwrap()));
        assert!(!net("192.0.2.7").contains("192.0.2.8".parse().unwrap()));
        assert!(net("::1").contains("::1".parse().unwrap()));
        assert!(net("2001:db8::/32").contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(net("0.0.0.0/0").contains("8.8.8.8".parse().unwrap()));
        assert!(
            net("127.0.0.0/8").contains("::ffff:127.0.0.1".parse().unwrap()),
            "IPv4-mapped"
        );
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", ""] {
            assert!(bad.parse::<IpNetwork>().is_err(), "{bad}");
        }
    }

    fn request(extra: &str) -> Request {
        let head = format!("GET / HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        Request::parse(head.as_bytes(), &HandshakeLimits::default())
            .unwrap()
            .unwrap()
            .0
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_nearest() {
        let proxies = TrustedProxies {
            networks: vec![net("10.0.0.0/8")],
            header: ProxyHeader::Forwarded,
        };
        let lb: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let xff = request("X-Forwarded-For: 6.6.6.6, 198.51.100.7, 10.1.1.1\r\n");
        // 6.6.6.6 is what the client claimed; 198.51.100.7 is who reached our proxies.
        assert_eq!(
            proxies.client_from_headers(lb, &xff),
            "198.51.100.7:0".parse().unwrap()
        );
        assert_eq!(
            proxies.client_from_headers(stranger, &xff),
            stranger,
            "untrusted peer"
        );
        let fwd =
            request("Forwarded: for=192.0.2.60;proto=https, for=\"[2001:db8:cafe::17]:4711\"\r\n");
        assert_eq!(
            proxies.client_from_headers(lb, &fwd),
            "[2001:db8:cafe::17]:4711".parse().unwrap()
        );
        let split = request("X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 10.0.0.9\r\n");
        assert_eq!(
            proxies.client_from_headers(lb, &split),
            "192.0.2.1:0".parse().unwrap(),
            "several headers are one list"
        );
        let unknown = request("Forwarded: for=192.0.2.60, for=unknown\r\n");
        assert_eq!(
            proxies.client_from_headers(lb, &unknown),
            lb,
            "stops at unknown"
        );
        assert_eq!(
            proxies.client_from_headers(lb, &request("")),
            lb,
            "no header"
        );
        let pp = TrustedProxies {
            header: ProxyHeader::ProxyProtocol,
            ..proxies
        };
        assert_eq!(
            pp.client_from_headers(lb, &xff),
            lb,
            "headers are not this mode's"
        );
    }
}
