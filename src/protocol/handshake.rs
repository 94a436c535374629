//! The server side of the opening handshake (RFC 6455 section 4.2).
//!
//! [`Request::parse`] is incremental: an incomplete request consumes nothing,
//! and bytes after the request (a client's first frames, sent in the same
//! packet) are left to the frame decoder. [`Request::validate_upgrade`] checks
//! the WebSocket rules and says which HTTP status a failure deserves.
//! Responses are written into a caller-provided buffer.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};
use std::fmt;
use std::io::Write as _;
use std::ops::Range;

/// The GUID of RFC 6455 section 1.3.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Limits on the request head, the first thing an attacker controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// The request line and headers together, in bytes (else 431).
    pub max_request_bytes: usize,
    /// How many header lines (else 431).
    pub max_headers: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        HandshakeLimits {
            max_request_bytes: 8 * 1024,
            max_headers: 64,
        }
    }
}

/// The most header slots [`Request::parse`] can offer, whatever the limit says.
pub const MAX_HEADERS_CAP: usize = 256;

/// Why a request was refused, with the HTTP status it is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not parseable as HTTP/1.x (400).
    Malformed,
    /// The head is larger than the limit (431).
    RequestTooLarge,
    /// More header lines than the limit (431).
    TooManyHeaders,
    /// Not GET (405).
    MethodNotAllowed,
    /// HTTP/1.0 (400).
    HttpVersion,
    /// No Host header, or more than one (400).
    BadHost,
    /// No `Upgrade: websocket`: a plain HTTP request (426).
    NotUpgrade,
    /// `Upgrade: websocket` without the `Upgrade` token in `Connection` (400).
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Key` missing, repeated, or not 16 bytes in base64 (400).
    BadKey,
    /// `Sec-WebSocket-Version` missing or not 13 (426 with `Sec-WebSocket-Version: 13`).
    UnsupportedVersion,
}

impl HandshakeError {
    /// The HTTP status of the error response.
    pub fn status(self) -> u16 {
        match self {
            HandshakeError::RequestTooLarge | HandshakeError::TooManyHeaders => 431,
            HandshakeError::MethodNotAllowed => 405,
            HandshakeError::NotUpgrade | HandshakeError::UnsupportedVersion => 426,
            _ => 400,
        }
    }

    /// Why, in a few words (the response body).
    pub fn reason(self) -> &'static str {
        match self {
            HandshakeError::Malformed => "malformed request",
            HandshakeError::RequestTooLarge => "request head too large",
            HandshakeError::TooManyHeaders => "too many headers",
            HandshakeError::MethodNotAllowed => "method not allowed",
            HandshakeError::HttpVersion => "HTTP/1.1 or later required",
            HandshakeError::BadHost => "missing or repeated Host",
            HandshakeError::NotUpgrade => "not a WebSocket upgrade",
            HandshakeError::MissingConnectionUpgrade => "Connection header lacks Upgrade",
            HandshakeError::BadKey => "invalid Sec-WebSocket-Key",
            HandshakeError::UnsupportedVersion => "unsupported Sec-WebSocket-Version",
        }
    }

    /// Headers the error response must carry besides the defaults.
    pub fn extra_headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            HandshakeError::UnsupportedVersion => &[("Sec-WebSocket-Version", "13")],
            HandshakeError::NotUpgrade => &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
            HandshakeError::MethodNotAllowed => &[("Allow", "GET")],
            _ => &[],
        }
    }

    /// Writes the complete error response into `out`.
    pub fn write_response(self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let body = self.reason();
        write_response(self.status(), self.extra_headers(), body.as_bytes(), out)
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.status())
    }
}

impl std::error::Error for HandshakeError {}

/// The output buffer cannot hold the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferTooSmall;

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("buffer too small for the response")
    }
}

impl std::error::Error for BufferTooSmall {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HeaderSpan {
    name: (u32, u32),
    value: (u32, u32),
}

/// A parsed request head. It owns a copy of the head's bytes (one allocation)
/// and hands out borrowed views, so it can cross to a worker thread as is.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    raw: Box<[u8]>,
    method: (u32, u32),
    target: (u32, u32),
    minor_version: u8,
    headers: Vec<HeaderSpan>,
}

fn span_of(base: &[u8], part: &[u8]) -> (u32, u32) {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    (start as u32, (start + part.len()) as u32)
}

fn range(span: (u32, u32)) -> Range<usize> {
    span.0 as usize..span.1 as usize
}

impl Request {
    /// Parses a request head from the start of `buf`. `Ok(None)`: incomplete,
    /// nothing consumed. `Ok(Some((request, n)))`: the head was the first `n`
    /// bytes; anything after them belongs to the WebSocket stream.
    pub fn parse(
        buf: &[u8],
        limits: &HandshakeLimits,
    ) -> Result<Option<(Request, usize)>, HandshakeError> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS_CAP];
        let slots = &mut slots[..limits.max_headers.clamp(1, MAX_HEADERS_CAP)];
        let mut req = httparse::Request::new(slots);
        let status = match req.parse(buf) {
            Ok(s) => s,
            Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooManyHeaders),
            Err(_) => return Err(HandshakeError::Malformed),
        };
        let head_len = match status {
            httparse::Status::Partial => {
                return if buf.len() >= limits.max_request_bytes {
                    Err(HandshakeError::RequestTooLarge)
                } else {
                    Ok(None)
                };
            }
            httparse::Status::Complete(n) => n,
        };
        if head_len > limits.max_request_bytes {
            return Err(HandshakeError::RequestTooLarge);
        }
        let head = &buf[..head_len];
        let method = span_of(head, req.method.unwrap_or("").as_bytes());
        let target = span_of(head, req.path.unwrap_or("").as_bytes());
        let headers = req
            .headers
            .iter()
            .map(|h| HeaderSpan {
                name: span_of(head, h.name.as_bytes()),
                value: span_of(head, h.value),
            })
            .collect();
        Ok(Some((
            Request {
                raw: head.into(),
                method,
                target,
                minor_version: req.version.unwrap_or(0),
                headers,
            },
            head_len,
        )))
    }

    fn str_at(&self, span: (u32, u32)) -> &str {
        // Method, target and header names are ASCII tokens by httparse's grammar.
        std::str::from_utf8(&self.raw[range(span)]).unwrap_or("")
    }

    /// The request method.
    pub fn method(&self) -> &str {
        self.str_at(self.method)
    }

    /// The request target as sent: path and query.
    pub fn target(&self) -> &str {
        self.str_at(self.target)
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        let t = self.target();
        t.split_once('?').map_or(t, |(p, _)| p)
    }

    /// The query string after `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.target().split_once('?').map(|(_, q)| q)
    }

    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub fn http_minor_version(&self) -> u8 {
        self.minor_version
    }

    /// Every header in order, names as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.headers
            .iter()
            .map(move |h| (self.str_at(h.name), &self.raw[range(h.value)]))
    }

    /// Values of every header named `name` (case-insensitive), in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of header `name`, if it is present and UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        let (_, value) = self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name))?;
        std::str::from_utf8(value).ok()
    }

    /// The `Origin` header.
    pub fn origin(&self) -> Option<&str> {
        self.header("Origin")
    }

    /// The `Host` header.
    pub fn host(&self) -> Option<&str> {
        self.header("Host")
    }

    /// Comma-separated list items of every header `name`, trimmed, empty items skipped.
    pub fn header_list<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.header_values(name)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// Subprotocols the client offered, in its order of preference.
    pub fn protocols(&self) -> impl Iterator<Item = &str> + '_ {
        self.header_list("Sec-WebSocket-Protocol")
    }

    /// Extension offers, each with its parameters (`permessage-deflate; client_max_window_bits`).
    pub fn extensions(&self) -> impl Iterator<Item = &str> + '_ {
        self.header_list("Sec-WebSocket-Extensions")
    }

    fn has_token(&self, header: &str, token: &str) -> bool {
        self.header_list(header)
            .any(|t| t.eq_ignore_ascii_case(token))
    }

    /// True when the client asks for a WebSocket upgrade at all (`Upgrade: websocket`).
    pub fn is_upgrade(&self) -> bool {
        self.has_token("Upgrade", "websocket")
    }

    /// The request means to open a WebSocket: it asks for the upgrade, or
    /// carries the handshake's own headers (`Sec-WebSocket-Key`,
    /// `Sec-WebSocket-Version`) even if its `Upgrade` is missing or another
    /// protocol. Such a request that fails [`Request::validate_upgrade`] is a
    /// failed upgrade, never a plain HTTP request.
    pub fn attempts_websocket(&self) -> bool {
        self.is_upgrade()
            || self.header_values("Sec-WebSocket-Key").next().is_some()
            || self.header_values("Sec-WebSocket-Version").next().is_some()
    }

    /// Applies RFC 6455 section 4.2.1 and returns the client's key on success.
    pub fn validate_upgrade(&self) -> Result<&[u8], HandshakeError> {
        if self.method() != "GET" {
            return Err(HandshakeError::MethodNotAllowed);
        }
        if self.minor_version < 1 {
            return Err(HandshakeError::HttpVersion);
        }
        if self.header_values("Host").count() != 1 {
            return Err(HandshakeError::BadHost);
        }
        if !self.is_upgrade() {
            return Err(HandshakeError::NotUpgrade);
        }
        if !self.has_token("Connection", "Upgrade") {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        let mut keys = self.header_values("Sec-WebSocket-Key");
        let key = keys.next().ok_or(HandshakeError::BadKey)?;
        if keys.next().is_some() {
            return Err(HandshakeError::BadKey);
        }
        let key = key.trim_ascii();
        let mut decoded = [0u8; 18];
        match BASE64.decode_slice(key, &mut decoded) {
            Ok(16) => {}
            _ => return Err(HandshakeError::BadKey),
        }
        let mut versions = self.header_values("Sec-WebSocket-Version");
        match (versions.next(), versions.next()) {
            (Some(v), None) if v.trim_ascii() == b"13" => {}
            _ => return Err(HandshakeError::UnsupportedVersion),
        }
        Ok(key)
    }

    /// The bytes of the head as received.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method())
            .field("target", &self.target())
            .field("headers", &self.headers().count())
            .finish()
    }
}

/// `base64(sha1(key + GUID))`, the value of `Sec-WebSocket-Accept`.
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID.as_bytes());
    let digest = sha.finalize();
    let mut out = [0u8; 28];
    let n = BASE64
        .encode_slice(digest, &mut out)
        .expect("20 bytes encode to 28");
    debug_assert_eq!(n, 28);
    out
}

/// What the server answers a valid upgrade with.
#[derive(Debug, Default, Clone, Copy)]
pub struct AcceptOptions<'a> {
    /// The chosen subprotocol (must be one the client offered).
    pub protocol: Option<&'a str>,
    /// The accepted extensions' response value (`permessage-deflate; ...`).
    pub extensions: Option<&'a str>,
    /// Extra response headers.
    pub headers: &'a [(&'a str, &'a str)],
}

/// Why an application's response header is refused ([`check_extra_header`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderRefused {
    /// The name is empty or has a character outside an HTTP token (RFC 9110
    /// 5.6.2): a space, a tab, a colon, a control ...
    BadName,
    /// The value has a control character (CR or LF would split the response).
    BadValue,
    /// A header the server writes itself: `Content-Length`,
    /// `Transfer-Encoding`, `Connection`, `Upgrade`, any `Sec-WebSocket-*`.
    Reserved,
}

/// Whether an application may add `name: value` to a response (a 101, a
/// rejection or a plain HTTP answer).
pub fn check_extra_header(name: &str, value: &str) -> Result<(), HeaderRefused> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(tchar) {
        return Err(HeaderRefused::BadName);
    }
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HeaderRefused::BadValue);
    }
    let reserved = [
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
    ];
    let lower = name.to_ascii_lowercase();
    if reserved.contains(&lower.as_str()) || lower.starts_with("sec-websocket-") {
        return Err(HeaderRefused::Reserved);
    }
    Ok(())
}

fn check_header_text(s: &str) -> Result<(), BufferTooSmall> {
    // A CR or LF in a caller's header would split the response: refuse it
    // rather than write a response the caller did not mean.
    if s.bytes().any(|b| b == b'\r' || b == b'\n') {
        Err(BufferTooSmall)
    } else {
        Ok(())
    }
}

/// Writes the `101 Switching Protocols` response into `out`.
pub fn write_accept(
    key: &[u8],
    opts: &AcceptOptions<'_>,
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    let total = out.len();
    let mut w: &mut [u8] = out;
    let accept = accept_key(key);
    (|| -> std::io::Result<()> {
        w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ")?;
        w.write_all(&accept)?;
        w.write_all(b"\r\n")?;
        if let Some(p) = opts.protocol {
            write!(w, "Sec-WebSocket-Protocol: {p}\r\n")?;
        }
        if let Some(e) = opts.extensions {
            write!(w, "Sec-WebSocket-Extensions: {e}\r\n")?;
        }
        for (n, v) in opts.headers {
            write!(w, "{n}: {v}\r\n")?;
        }
        w.write_all(b"\r\n")
    })()
    .map_err(|_| BufferTooSmall)?;
    for s in opts.protocol.iter().chain(opts.extensions.iter()) {
        check_header_text(s)?;
    }
    for (n, v) in opts.headers {
        check_header_text(n)?;
        check_header_text(v)?;
    }
    Ok(total - w.len())
}

/// The standard reason phrase of the statuses a WebSocket server sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes a complete HTTP/1.1 response that ends the connection (`Connection:
/// close`, `Content-Length`), used for rejections and plain HTTP answers.
pub fn write_response(
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    for (n, v) in headers {
        check_header_text(n)?;
        check_header_text(v)?;
    }
    let total = out.len();
    let mut w: &mut [u8] = out;
    (|| -> std::io::Result<()> {
        write!(w, "HTTP/1.1 {} {}\r\n", status, reason_phrase(status))?;
        let mut has_type = false;
        for (n, v) in headers {
            has_type |= n.eq_ignore_ascii_case("Content-Type");
            write!(w, "{n}: {v}\r\n")?;
        }
        if !has_type && !body.is_empty() {
            w.write_all(b"Content-Type: text/plain; charset=utf-8\r\n")?;
        }
        write!(
            w,
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        w.write_all(body)
    })()
    .map_err(|_| BufferTooSmall)?;
    Ok(total - w.len())
}

/// [`write_response`] into a vector sized to fit.
pub fn response_vec(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let guess = 128
        + body.len()
        + headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum::<usize>();
    let mut out = vec![0u8; guess];
    match write_response(status, headers, body, &mut out) {
        Ok(n) => out.truncate(n),
        // Only a header with CR/LF gets here: answer with a bare 500 instead.
        Err(BufferTooSmall) => {
            let n = write_response(500, &[], b"", &mut out).unwrap_or(0);
            out.truncate(n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_REQUEST: &[u8] = b"GET /chat?room=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, HandshakeError> {
        Request::parse(buf, &HandshakeLimits::default())
    }

    #[test]
    fn extra_headers_the_server_refuses() {
        assert_eq!(check_extra_header("X-Trace", "a b\tc"), Ok(()));
        assert_eq!(check_extra_header("Set-Cookie", "k=v; Path=/"), Ok(()));
        for bad in ["", "X Trace", "X:Trace", "X\tT", "X\r\nEvil"] {
            assert_eq!(
                check_extra_header(bad, "v"),
                Err(HeaderRefused::BadName),
                "{bad:?}"
            );
        }
        for bad in ["a\r\nb", "a\nb", "a\0b", "a\x7fb"] {
            assert_eq!(
                check_extra_header("X", bad),
                Err(HeaderRefused::BadValue),
                "{bad:?}"
            );
        }
        for reserved in [
            "Content-Length",
            "transfer-encoding",
            "CONNECTION",
            "Upgrade",
            "Sec-WebSocket-Accept",
            "sec-websocket-protocol",
        ] {
            assert_eq!(
                check_extra_header(reserved, "1"),
                Err(HeaderRefused::Reserved)
            );
        }
    }

    fn with_headers(lines: &[&str]) -> Vec<u8> {
        let mut s = String::from("GET / HTTP/1.1\r\n");
        for l in lines {
            s.push_str(l);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    const GOOD: [&str; 5] = [
        "Host: h",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ];

    fn validate(lines: &[&str]) -> Result<(), HandshakeError> {
        let buf = with_headers(lines);
        let (req, _) = parse(&buf)?.expect("complete");
        req.validate_upgrade().map(|_| ())
    }

    #[test]
    fn rfc_accept_key_example() {
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn parses_rfc_request_and_exposes_everything() {
        let (req, n) = parse(RFC_REQUEST).unwrap().unwrap();
        assert_eq!(n, RFC_REQUEST.len());
        assert_eq!(req.method(), "GET");
        assert_eq!(req.path(), "/chat");
        assert_eq!(req.query(), Some("room=1"));
        assert_eq!(req.origin(), Some("http://example.com"));
        assert_eq!(req.protocols().collect::<Vec<_>>(), ["chat", "superchat"]);
        assert_eq!(req.headers().count(), 7);
        assert_eq!(req.validate_upgrade().unwrap(), b"dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn incomplete_request_consumes_nothing_and_trailing_bytes_stay() {
        for cut in 0..RFC_REQUEST.len() {
            assert!(parse(&RFC_REQUEST[..cut]).unwrap().is_none(), "cut {cut}");
        }
        let mut with_frame = RFC_REQUEST.to_vec();
        with_frame.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
        let (_, n) = parse(&with_frame).unwrap().unwrap();
        assert_eq!(&with_frame[n..], &[0x81, 0x80, 1, 2, 3, 4]);
    }

    #[test]
    fn statuses_for_each_violation() {
        assert_eq!(validate(&GOOD), Ok(()));
        let without = |skip: usize| -> Vec<&str> {
            GOOD.iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, l)| *l)
                .collect()
        };
        assert_eq!(validate(&without(0)).unwrap_err(), HandshakeError::BadHost);
        assert_eq!(validate(&without(1)).unwrap_err().status(), 426);
        assert_eq!(
            validate(&without(2)).unwrap_err(),
            HandshakeError::MissingConnectionUpgrade
        );
        assert_eq!(validate(&without(3)).unwrap_err().status(), 400);
        let e = validate(&without(4)).unwrap_err();
        assert_eq!(e.status(), 426);
        assert_eq!(e.extra_headers(), &[("Sec-WebSocket-Version", "13")]);

        let mut lines = GOOD.to_vec();
        lines[4] = "Sec-WebSocket-Version: 8";
        assert_eq!(
            validate(&lines).unwrap_err(),
            HandshakeError::UnsupportedVersion
        );
        lines[4] = GOOD[4];
        lines[3] = "Sec-WebSocket-Key: c2hvcnQ="; // "short": 5 bytes
        assert_eq!(validate(&lines).unwrap_err(), HandshakeError::BadKey);
        lines[3] = "Sec-WebSocket-Key: !!!!notbase64!!!!!!!!!==";
        assert_eq!(validate(&lines).unwrap_err(), HandshakeError::BadKey);

        let post = b"POST / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let (req, _) = parse(post).unwrap().unwrap();
        assert_eq!(req.validate_upgrade().unwrap_err().status(), 405);
        let http10 = b"GET / HTTP/1.0\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let (req, _) = parse(http10).unwrap().unwrap();
        assert_eq!(
            req.validate_upgrade().unwrap_err(),
            HandshakeError::HttpVersion
        );
        assert_eq!(
            parse(b"\x16\x03\x01garbage\r\n\r\n").unwrap_err().status(),
            400
        );
    }

    #[test]
    fn token_lists_are_case_insensitive_comma_separated_and_repeatable() {
        let lines = [
            "Host: h",
            "upgrade: WebSocket",
            "connection: keep-alive",
            "Connection: foo, UPGRADE",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "sec-websocket-version: 13",
        ];
        assert_eq!(validate(&lines), Ok(()));
        let lines = [
            "Host: h",
            "Upgrade: h2c, websocket",
            "Connection: keep-alive,Upgrade",
            GOOD[3],
            GOOD[4],
        ];
        assert_eq!(validate(&lines), Ok(()));
    }

    #[test]
    fn size_and_header_count_caps() {
        let limits = HandshakeLimits {
            max_request_bytes: 256,
            max_headers: 8,
        };
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n", "a".repeat(300));
        assert_eq!(
            Request::parse(big.as_bytes(), &limits)
                .unwrap_err()
                .status(),
            431
        );
        let many: Vec<String> = (0..9).map(|i| format!("X-{i}: v")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let buf = with_headers(&many);
        assert_eq!(
            Request::parse(&buf, &limits).unwrap_err(),
            HandshakeError::TooManyHeaders
        );
    }

    #[test]
    fn writes_rfc_response_and_rejects_small_buffers() {
        let mut out = [0u8; 256];
        let opts = AcceptOptions {
            protocol: Some("chat"),
            ..Default::default()
        };
        let n = write_accept(b"dGhlIHNhbXBsZSBub25jZQ==", &opts, &mut out).unwrap();
        assert_eq!(
            &out[..n],
            &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n"[..]
        );
        let mut tiny = [0u8; 40];
        assert_eq!(write_accept(b"k", &opts, &mut tiny), Err(BufferTooSmall));
        let evil = AcceptOptions {
            headers: &[("X-A", "1\r\nSet-Cookie: x")],
            ..Default::default()
        };
        assert_eq!(write_accept(b"k", &evil, &mut out), Err(BufferTooSmall));
    }

    #[test]
    fn error_responses() {
        let mut out = [0u8; 512];
        let n = HandshakeError::UnsupportedVersion
            .write_response(&mut out)
            .unwrap();
        let text = std::str::from_utf8(&out[..n]).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        let r = response_vec(503, &[("Retry-After", "1")], b"busy");
        assert_eq!(
            r,
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy"
        );
    }
}
