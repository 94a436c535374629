//! The client side of the opening handshake, for the tests, the fuzz targets
//! and the load generator: build a request, check the server's answer.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::handshake::accept_key;

/// Builds an upgrade request. `nonce` becomes the 16-byte key; callers pick it
/// (random in production clients, fixed in tests).
pub fn request(
    host: &str,
    target: &str,
    nonce: [u8; 16],
    protocols: &[&str],
    extra: &[(&str, &str)],
) -> (Vec<u8>, String) {
    let key = BASE64.encode(nonce);
    let mut s = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if !protocols.is_empty() {
        s.push_str(&format!(
            "Sec-WebSocket-Protocol: {}\r\n",
            protocols.join(", ")
        ));
    }
    for (n, v) in extra {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    s.push_str("\r\n");
    (s.into_bytes(), key)
}

/// The server's answer to an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The subprotocol the server chose, if any.
    pub protocol: Option<String>,
    /// Every header, names as sent.
    pub headers: Vec<(String, String)>,
}

/// Why a handshake response was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseError {
    /// Not an HTTP response head.
    Malformed,
    /// Not 101; the response is kept for inspection.
    Status(Response),
    /// `Sec-WebSocket-Accept` missing or not the one the key asks for.
    BadAccept,
}

/// Parses the response head from the start of `buf`. `Ok(None)`: incomplete.
/// On success returns the response and the length of its head; bytes after it
/// are the server's first frames.
pub fn parse_response(buf: &[u8], key: &str) -> Result<Option<(Response, usize)>, ResponseError> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut slots);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ResponseError::Malformed),
    };
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let response = Response {
        status: resp.code.unwrap_or(0),
        protocol: get("Sec-WebSocket-Protocol"),
        headers: headers.clone(),
    };
    if response.status != 101 {
        return Err(ResponseError::Status(response));
    }
    let expected = accept_key(key.as_bytes());
    match get("Sec-WebSocket-Accept") {
        Some(v) if v.as_bytes() == expected => Ok(Some((response, n))),
        _ => Err(ResponseError::BadAccept),
    }
}
