//! permessage-deflate (RFC 7692): negotiation, and whole-message compression
//! and decompression over zlib-rs.
//!
//! zlib-rs is used directly (not through flate2) because its configuration
//! exposes `mem_level`, which with the window size decides what a dedicated
//! compressor costs per connection (about 2^(wb+2) + 2^(ml+9) bytes).
//!
//! Two ways to run it:
//! - **stateless** (the default): both sides agree to no context takeover, so no
//!   connection keeps zlib state between messages; each thread reuses one
//!   compressor and one inflater for every connection it serves;
//! - **dedicated**: context takeover in one or both directions, with a
//!   compressor and/or inflater per connection (created at its first
//!   compressed message), sized by window bits and memory level.

use std::cell::RefCell;

use zlib_rs::{
    Deflate, DeflateConfig, DeflateFlush, Inflate, InflateFlush, Method, Status, Strategy,
};

/// The server's permessage-deflate policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateOptions {
    /// Accept offers at all.
    pub enabled: bool,
    /// Keep our compression context between messages (better ratio, a
    /// compressor per connection). Off: `server_no_context_takeover`.
    pub server_context_takeover: bool,
    /// Let clients keep theirs (an inflater per connection). Off: we answer
    /// with `client_no_context_takeover`, which clients must honour.
    pub client_context_takeover: bool,
    /// Our LZ77 window, 9..=15 (lower when a client asks for less).
    pub server_max_window_bits: u8,
    /// The window we ask clients to use when they allow it, 9..=15.
    pub client_max_window_bits: u8,
    /// zlib memory level, 1..=9: the compressor's hash table is 2^(level+9) bytes.
    pub mem_level: u8,
    /// zlib compression level, 0..=9.
    pub level: u8,
    /// Messages shorter than this are sent uncompressed.
    pub threshold: usize,
}

impl DeflateOptions {
    /// No context takeover either way: no per-connection zlib state at all.
    pub const fn stateless() -> DeflateOptions {
        DeflateOptions {
            enabled: true,
            server_context_takeover: false,
            client_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            mem_level: 8,
            level: 1,
            threshold: 256,
        }
    }

    /// Context takeover both ways with the given window and memory level.
    pub const fn dedicated(window_bits: u8, mem_level: u8) -> DeflateOptions {
        DeflateOptions {
            enabled: true,
            server_context_takeover: true,
            client_context_takeover: true,
            server_max_window_bits: window_bits,
            client_max_window_bits: window_bits,
            mem_level,
            level: 1,
            threshold: 256,
        }
    }

    /// permessage-deflate is never negotiated.
    pub const fn disabled() -> DeflateOptions {
        DeflateOptions {
            enabled: false,
            ..DeflateOptions::stateless()
        }
    }

    /// The values clamped to what zlib can do.
    fn sane(self) -> DeflateOptions {
        DeflateOptions {
            server_max_window_bits: self.server_max_window_bits.clamp(9, 15),
            client_max_window_bits: self.client_max_window_bits.clamp(9, 15),
            mem_level: self.mem_level.clamp(1, 9),
            level: self.level.min(9),
            ..self
        }
    }
}

impl Default for DeflateOptions {
    fn default() -> Self {
        DeflateOptions::stateless()
    }
}

/// What both sides agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The server resets its compression context after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compression context after each message.
    pub client_no_context_takeover: bool,
    /// The window we compress with.
    pub server_max_window_bits: u8,
    /// The largest window the client compresses with (our inflate window).
    pub client_max_window_bits: u8,
}

/// The parameters of one offer.
#[derive(Debug, Default, PartialEq, Eq)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: offered without a value.
    client_max_window_bits: Option<Option<u8>>,
}

/// Why an offer is declined (each one is, and the next is tried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decline {
    NotDeflate,
    Malformed,
    Unsupported,
}

fn window_bits(value: Option<&str>) -> Result<u8, Decline> {
    let v = value.ok_or(Decline::Malformed)?;
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v);
    // RFC 7692: 8..=15, decimal, no leading zeros.
    if v.is_empty() || v.len() > 2 || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Decline::Malformed);
    }
    match v.parse::<u8>() {
        Ok(n @ 8..=15) => Ok(n),
        _ => Err(Decline::Malformed),
    }
}

fn parse_offer(offer: &str) -> Result<Offer, Decline> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate"))
    {
        return Err(Decline::NotDeflate);
    }
    let mut o = Offer::default();
    let mut seen = [false; 4];
    for param in parts {
        if param.is_empty() {
            return Err(Decline::Malformed);
        }
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (param, None),
        };
        let index = match name {
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => 2,
            "client_max_window_bits" => 3,
            _ => return Err(Decline::Malformed),
        };
        if std::mem::replace(&mut seen[index], true) {
            return Err(Decline::Malformed); // duplicate
        }
        match index {
            0 | 1 if value.is_some() => return Err(Decline::Malformed),
            0 => o.server_no_context_takeover = true,
            1 => o.client_no_context_takeover = true,
            2 => o.server_max_window_bits = Some(window_bits(value)?),
            _ => {
                o.client_max_window_bits = Some(match value {
                    None => None,
                    Some(_) => Some(window_bits(value)?),
                })
            }
        }
    }
    Ok(o)
}

/// Picks the first acceptable offer, in the client's order, and returns the
/// agreement with its `Sec-WebSocket-Extensions` response value.
pub fn negotiate<'a>(
    offers: impl IntoIterator<Item = &'a str>,
    options: &DeflateOptions,
) -> Option<(Agreed, String)> {
    if !options.enabled {
        return None;
    }
    let opts = options.sane();
    offers.into_iter().find_map(|text| {
        let offer = parse_offer(text).ok()?;
        accept(&offer, &opts).ok()
    })
}

fn accept(offer: &Offer, opts: &DeflateOptions) -> Result<(Agreed, String), Decline> {
    let mut response = String::from("permessage-deflate");
    let server_nct = offer.server_no_context_takeover || !opts.server_context_takeover;
    let client_nct = offer.client_no_context_takeover || !opts.client_context_takeover;
    if server_nct {
        response.push_str("; server_no_context_takeover");
    }
    if client_nct {
        response.push_str("; client_no_context_takeover");
    }
    let server_bits = match offer.server_max_window_bits {
        // Raw zlib cannot compress with a 256-byte window.
        Some(8) => return Err(Decline::Unsupported),
        Some(asked) => {
            let bits = asked.min(opts.server_max_window_bits);
            response.push_str(&format!("; server_max_window_bits={bits}"));
            bits
        }
        // A smaller window than announced is always decodable: no need to say.
        None => opts.server_max_window_bits,
    };
    let client_bits = match offer.client_max_window_bits {
        None => 15,
        Some(limit) => {
            let bits = limit.unwrap_or(15).min(opts.client_max_window_bits);
            if bits < 15 || limit.is_some() {
                response.push_str(&format!("; client_max_window_bits={bits}"));
            }
            bits
        }
    };
    Ok((
        Agreed {
            server_no_context_takeover: server_nct,
            client_no_context_takeover: client_nct,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits.max(9),
        },
        response,
    ))
}

/// (Client side) reads the server's `Sec-WebSocket-Extensions` answer.
/// `None` when it did not accept permessage-deflate or answered malformed.
pub fn parse_response(value: &str) -> Option<Agreed> {
    let offer = value
        .split(',')
        .map(str::trim)
        .find_map(|e| parse_offer(e).ok())?;
    Some(Agreed {
        server_no_context_takeover: offer.server_no_context_takeover,
        client_no_context_takeover: offer.client_no_context_takeover,
        server_max_window_bits: offer.server_max_window_bits.unwrap_or(15),
        client_max_window_bits: offer.client_max_window_bits.flatten().unwrap_or(15).max(9),
    })
}

/// The 4 bytes a sync flush ends with; stripped on send, put back to inflate.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// A raw-deflate compressor for whole messages.
pub struct Compressor {
    zlib: Deflate,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Compressor")
    }
}

impl Compressor {
    /// A compressor that keeps its context between messages.
    pub fn new(level: u8, window_bits: u8, mem_level: u8) -> Compressor {
        let config = DeflateConfig {
            level: level.min(9) as i32,
            method: Method::Deflated,
            window_bits: -(window_bits.clamp(9, 15) as i32),
            mem_level: mem_level.clamp(1, 9) as i32,
            strategy: Strategy::Default,
        };
        Compressor {
            zlib: Deflate::new_with_config(config),
        }
    }

    /// Appends `data`, compressed as one message (sync-flushed, tail
    /// stripped), to `out`. With `reset`, no context is carried to the next message.
    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>, reset: bool) {
        let start = out.len();
        let mut input = data;
        out.reserve(data.len() / 2 + 64);
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before_in = self.zlib.total_in();
            let before_out = self.zlib.total_out();
            let spare = out.spare_capacity_mut();
            let status = self
                .zlib
                .compress_uninit(input, spare, DeflateFlush::SyncFlush);
            let wrote = (self.zlib.total_out() - before_out) as usize;
            let spare_len = spare.len();
            // SAFETY: zlib initialised exactly `wrote` bytes of the spare capacity.
            unsafe { out.set_len(out.len() + wrote) };
            input = &input[(self.zlib.total_in() - before_in) as usize..];
            let done = input.is_empty() && wrote < spare_len;
            if done || !matches!(status, Ok(Status::Ok) | Ok(Status::BufError)) {
                break;
            }
        }
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if out.len() == start {
            // An empty message compresses to one zero byte (RFC 7692 section 7.2.3.6).
            out.push(0);
        }
        if reset {
            self.zlib.reset();
        }
    }
}

/// Why a compressed message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the cap (1009); inflating stopped there.
    TooBig,
    /// Not valid deflate data (1007).
    Corrupt,
}

/// A raw-deflate decompressor for whole messages.
pub struct Decompressor {
    zlib: Inflate,
}

impl std::fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decompressor")
    }
}

impl Decompressor {
    /// An inflater that keeps its context between messages.
    pub fn new(window_bits: u8) -> Decompressor {
        Decompressor {
            zlib: Inflate::new(false, window_bits.clamp(9, 15)),
        }
    }

    /// Inflates one message into `out`, never letting `out` pass `cap` bytes:
    /// a small message that would inflate to gigabytes stops at the cap.
    pub fn inflate(
        &mut self,
        data: &[u8],
        cap: usize,
        out: &mut Vec<u8>,
        reset: bool,
    ) -> Result<(), InflateError> {
        let result = self
            .inflate_part(data, cap, out)
            .and_then(|_| self.inflate_part(&TAIL, cap, out));
        if reset || result.is_err() {
            self.zlib.reset(false);
        }
        result
    }

    fn inflate_part(
        &mut self,
        mut input: &[u8],
        cap: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        loop {
            if out.len() >= cap {
                // Room for one more byte tells "exactly at the cap" from "past it".
                if out.capacity() == out.len() {
                    out.reserve_exact(1);
                }
            } else if out.capacity() - out.len() < 1024 {
                let want = (out.len().max(4096)).min(cap - out.len()).max(1);
                out.reserve_exact(want);
            }
            let room = if out.len() >= cap {
                1
            } else {
                (cap - out.len()).min(out.capacity() - out.len())
            };
            let before_in = self.zlib.total_in();
            let before_out = self.zlib.total_out();
            let spare = &mut out.spare_capacity_mut()[..room];
            let status = self
                .zlib
                .decompress_uninit(input, spare, InflateFlush::SyncFlush);
            let wrote = (self.zlib.total_out() - before_out) as usize;
            // SAFETY: zlib initialised exactly `wrote` bytes of the spare capacity.
            unsafe { out.set_len(out.len() + wrote) };
            if out.len() > cap {
                return Err(InflateError::TooBig);
            }
            input = &input[(self.zlib.total_in() - before_in) as usize..];
            match status {
                Ok(Status::StreamEnd) => {
                    return if input.is_empty() {
                        Ok(())
                    } else {
                        Err(InflateError::Corrupt)
                    }
                }
                Ok(_) if input.is_empty() && wrote < room => return Ok(()),
                Ok(_) => {
                    if wrote == 0
                        && !input.is_empty()
                        && room > 0
                        && matches!(status, Ok(Status::BufError))
                    {
                        return Err(InflateError::Corrupt);
                    }
                }
                Err(_) => return Err(InflateError::Corrupt),
            }
        }
    }
}

/// One compressor and one inflater per thread for connections without
/// context takeover, so they hold no zlib state of their own.
struct SharedCodecs {
    compressors: Vec<((u8, u8, u8), Compressor)>,
    inflater: Option<Decompressor>,
}

thread_local! {
    static SHARED: RefCell<SharedCodecs> = const {
        RefCell::new(SharedCodecs {
            compressors: Vec::new(),
            inflater: None,
        })
    };
}

/// The most bytes a raw deflate stream of `len` bytes of input can take, for
/// any compression settings a peer may use (zlib's conservative
/// `deflateBound`: stored or fixed-Huffman blocks, an eighth and a
/// sixty-fourth more), plus room for the empty blocks of a fragmented
/// stream's flushes. A compressed message's frames are held to this, and
/// the message itself to its limit once inflated.
pub fn compressed_bound(len: u64) -> u64 {
    len.saturating_add(len.div_ceil(8))
        .saturating_add(len.div_ceil(64))
        .saturating_add(64)
}

/// Compresses one message with this thread's shared compressor for these
/// parameters (no context is kept).
#[doc(hidden)] // for tests, fuzzing and benches; not part of the supported API
pub fn compress_stateless(
    data: &[u8],
    level: u8,
    window_bits: u8,
    mem_level: u8,
    out: &mut Vec<u8>,
) {
    SHARED.with(|s| {
        let mut s = s.borrow_mut();
        let key = (level, window_bits, mem_level);
        let index = match s.compressors.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                s.compressors
                    .push((key, Compressor::new(level, window_bits, mem_level)));
                s.compressors.len() - 1
            }
        };
        s.compressors[index].1.compress(data, out, true);
    })
}

/// Inflates one message with this thread's shared inflater (window 15 decodes
/// any client window), resetting it afterwards.
#[doc(hidden)] // for tests, fuzzing and benches; not part of the supported API
pub fn inflate_stateless(data: &[u8], cap: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
    SHARED.with(|s| {
        let mut s = s.borrow_mut();
        s.inflater
            .get_or_insert_with(|| Decompressor::new(15))
            .inflate(data, cap, out, true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neg(offers: &[&str], opts: DeflateOptions) -> Option<(Agreed, String)> {
        negotiate(offers.iter().copied(), &opts)
    }

    #[test]
    fn browser_offer_in_shared_mode() {
        let (a, r) = neg(
            &["permessage-deflate; client_max_window_bits"],
            DeflateOptions::stateless(),
        )
        .unwrap();
        assert_eq!(
            r,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert!(a.server_no_context_takeover && a.client_no_context_takeover);
        assert_eq!(
            (a.server_max_window_bits, a.client_max_window_bits),
            (15, 15)
        );
    }

    #[test]
    fn dedicated_mode_with_small_windows() {
        let (a, r) = neg(
            &["permessage-deflate; client_max_window_bits"],
            DeflateOptions::dedicated(10, 4),
        )
        .unwrap();
        assert_eq!(r, "permessage-deflate; client_max_window_bits=10");
        assert_eq!(
            (a.server_max_window_bits, a.client_max_window_bits),
            (10, 10)
        );
        assert!(!a.server_no_context_takeover && !a.client_no_context_takeover);
        // A client that cannot limit its window keeps 15; we still compress with 10.
        let (a, r) = neg(&["permessage-deflate"], DeflateOptions::dedicated(10, 4)).unwrap();
        assert_eq!(r, "permessage-deflate");
        assert_eq!(
            (a.server_max_window_bits, a.client_max_window_bits),
            (10, 15)
        );
    }

    #[test]
    fn client_requests_are_honoured() {
        let opts = DeflateOptions::dedicated(15, 8);
        let (a, r) = neg(
            &["permessage-deflate; server_no_context_takeover; server_max_window_bits=9"],
            opts,
        )
        .unwrap();
        assert_eq!(
            r,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9"
        );
        assert_eq!(a.server_max_window_bits, 9);
        assert!(a.server_no_context_takeover && !a.client_no_context_takeover);
        let (a, r) = neg(
            &["permessage-deflate; client_no_context_takeover; client_max_window_bits=12"],
            opts,
        )
        .unwrap();
        assert_eq!(
            r,
            "permessage-deflate; client_no_context_takeover; client_max_window_bits=12"
        );
        assert_eq!(a.client_max_window_bits, 12);
    }

    #[test]
    fn client_reads_the_answer() {
        let (a, r) = neg(
            &["permessage-deflate; client_max_window_bits"],
            DeflateOptions::dedicated(11, 4),
        )
        .unwrap();
        let seen = parse_response(&r).unwrap();
        // The client learns what was announced: our smaller window was not (it need not be).
        assert_eq!(seen.client_max_window_bits, a.client_max_window_bits);
        assert_eq!(seen.server_max_window_bits, 15);
        assert_eq!(a.server_max_window_bits, 11);
        let (a, r) = neg(
            &["permessage-deflate; server_max_window_bits=10"],
            DeflateOptions::stateless(),
        )
        .unwrap();
        assert_eq!(parse_response(&r), Some(a));
        assert_eq!(parse_response("x-other"), None);
    }

    #[test]
    fn bad_offers_are_declined_and_the_next_is_tried() {
        let opts = DeflateOptions::stateless();
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; unknown_param",
            "permessage-deflate;",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(neg(&[bad], opts), None, "{bad}");
            let (_, r) = neg(
                &[bad, "permessage-deflate; client_max_window_bits=\"11\""],
                opts,
            )
            .unwrap();
            assert!(r.ends_with("client_max_window_bits=11"), "{bad} -> {r}");
        }
        assert_eq!(
            neg(&["permessage-deflate"], DeflateOptions::disabled()),
            None
        );
    }

    #[test]
    fn compress_inflate_round_trip_with_and_without_context() {
        let msgs: Vec<Vec<u8>> = vec![
            b"hello hello hello hello".to_vec(),
            Vec::new(),
            (0..100_000u32).map(|i| (i % 251) as u8).collect(),
            br#"{"type":"update","id":42,"values":[1,2,3]}"#.repeat(30),
        ];
        for (window, mem, reset) in [(15, 8, true), (15, 8, false), (9, 1, false), (10, 4, true)] {
            let mut c = Compressor::new(6, window, mem);
            let mut d = Decompressor::new(window);
            for m in &msgs {
                let mut z = Vec::new();
                c.compress(m, &mut z, reset);
                assert!(!z.ends_with(&TAIL));
                let mut back = Vec::new();
                d.inflate(&z, 1 << 20, &mut back, reset).unwrap();
                assert_eq!(&back, m, "window {window} mem {mem} reset {reset}");
            }
        }
        let mut z = Vec::new();
        compress_stateless(&msgs[3], 1, 15, 8, &mut z);
        assert!(z.len() < msgs[3].len() / 5);
        let mut back = Vec::new();
        inflate_stateless(&z, 1 << 20, &mut back).unwrap();
        assert_eq!(back, msgs[3]);
    }

    #[test]
    fn inflating_stops_at_the_cap() {
        let bomb = vec![0u8; 50 << 20];
        let mut z = Vec::new();
        Compressor::new(9, 15, 9).compress(&bomb, &mut z, true);
        assert!(z.len() < 100 * 1024, "{} bytes", z.len());
        let mut out = Vec::new();
        assert_eq!(
            inflate_stateless(&z, 1 << 20, &mut out),
            Err(InflateError::TooBig)
        );
        assert!(
            out.capacity() <= (1 << 20) + 4096,
            "grew to {}",
            out.capacity()
        );
        // Exactly at the cap is fine.
        let exact = vec![7u8; 4096];
        let mut z = Vec::new();
        compress_stateless(&exact, 1, 15, 8, &mut z);
        let mut out = Vec::new();
        assert_eq!(inflate_stateless(&z, 4096, &mut out), Ok(()));
        assert_eq!(out, exact);
        let mut out = Vec::new();
        assert_eq!(
            inflate_stateless(&z, 4095, &mut out),
            Err(InflateError::TooBig)
        );
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        let mut out = Vec::new();
        assert_eq!(
            inflate_stateless(&[0xff, 0xfe, 0xfd, 0x00, 0x13], 1 << 20, &mut out),
            Err(InflateError::Corrupt)
        );
        // The shared inflater still works afterwards.
        let mut z = Vec::new();
        compress_stateless(b"after garbage", 1, 15, 8, &mut z);
        let mut out = Vec::new();
        inflate_stateless(&z, 1 << 20, &mut out).unwrap();
        assert_eq!(out, b"after garbage");
    }
}
