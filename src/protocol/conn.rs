//! The per-connection state machine: `Handshaking → Open → Closing → Closed`.
//!
//! The caller feeds it bytes and the current time and gets events back; the
//! bytes the protocol wants to send (handshake responses, pongs, close frames)
//! go into a caller-supplied [`Sink`]. Nothing here touches a socket or a clock.
//!
//! Reading works in place: [`Connection::read`] unmasks payloads inside the
//! caller's buffer and hands a complete, unfragmented message back as a slice of
//! it. Only an unfinished message is copied, into a buffer that exists while
//! the message does (unmasked as it is copied). A caller that keeps every
//! message anyway asks for them owned ([`Connection::own_messages`]): each is
//! then unmasked straight into a buffer of its own. Incomplete headers and
//! control frames consume nothing, so the caller keeps at most a few bytes of
//! tail between reads.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::close::{self, code, CloseFrame};
use super::deflate::{self, Agreed, Compressor, Decompressor, DeflateOptions, InflateError};
use super::error::ProtocolError;
use super::frame::{DecodeRules, EncodedHeader, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD};
use super::handshake::{self, AcceptOptions, HandshakeError, HandshakeLimits, Request};
use super::mask::{apply_mask, extend_masked};
use super::moment::Moment;
use super::utf8::{self, Utf8Validator};
use crate::spares::{Spares, Stock};

/// Which end of the connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Expects masked frames and a handshake request; sends unmasked frames.
    Server,
    /// Expects unmasked frames; sends masked frames. Used by tests and the load generator.
    Client,
}

/// Limits and timeouts the state machine enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolConfig {
    /// Largest payload of one frame (1009 beyond it).
    pub max_frame_size: u64,
    /// Largest message the peer may send, all its frames together (1009
    /// beyond it). Our own sends are not held to it.
    pub max_message_size: u64,
    /// Limits on the request head.
    pub handshake: HandshakeLimits,
    /// A request head must be complete within this time, else the connection is dropped.
    pub handshake_timeout: Option<Duration>,
    /// Close (1001) when nothing at all arrives from the peer for this long.
    pub idle_timeout: Option<Duration>,
    /// Send a ping when the peer has been silent this long.
    pub ping_interval: Option<Duration>,
    /// Give up on the peer when a ping gets no answer (nor any other traffic) this long.
    pub pong_timeout: Duration,
    /// After our close frame, wait this long for the peer's.
    pub close_timeout: Duration,
    /// permessage-deflate policy (servers negotiate with it).
    pub deflate: DeflateOptions,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
            handshake: HandshakeLimits::default(),
            handshake_timeout: Some(Duration::from_secs(10)),
            idle_timeout: Some(Duration::from_secs(120)),
            ping_interval: Some(Duration::from_secs(30)),
            pong_timeout: Duration::from_secs(20),
            close_timeout: Duration::from_secs(5),
            deflate: DeflateOptions::stateless(),
        }
    }
}

/// Where outgoing bytes go. The runtime's implementation queues them for the
/// socket; `Vec<u8>` is the in-memory one for tests.
pub trait Sink {
    /// Appends raw bytes (a handshake response) to the outgoing stream.
    fn write(&mut self, bytes: &[u8]);

    /// Appends one frame: `head`, then `payload` XORed with `mask` if given.
    fn frame(&mut self, head: &[u8], payload: &[u8], mask: Option<[u8; 4]>) {
        self.write(head);
        match mask {
            None => self.write(payload),
            Some(key) => {
                let mut chunk = [0u8; 512];
                let mut phase = 0;
                for piece in payload.chunks(chunk.len()) {
                    let c = &mut chunk[..piece.len()];
                    c.copy_from_slice(piece);
                    phase = apply_mask(c, key, phase);
                    self.write(c);
                }
            }
        }
    }
}

impl Sink for Vec<u8> {
    fn write(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn frame(&mut self, head: &[u8], payload: &[u8], mask: Option<[u8; 4]>) {
        self.extend_from_slice(head);
        let at = self.len();
        self.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut self[at..], key, 0);
        }
    }
}

/// Text or binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// UTF-8 text.
    Text,
    /// Bytes.
    Binary,
}

impl MessageKind {
    /// The opcode of the message's first frame.
    pub fn opcode(self) -> OpCode {
        match self {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        }
    }
}

/// A message's bytes: borrowed from the read buffer when it arrived whole,
/// owned when it had to be assembled.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// A slice of the caller's input buffer.
    Borrowed(&'a [u8]),
    /// Bytes assembled, inflated, or (see [`Connection::own_messages`])
    /// unmasked into a buffer of their own by the connection.
    Owned(Vec<u8>),
}

impl Payload<'_> {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Borrowed(b) => b,
            Payload::Owned(v) => v,
        }
    }

    /// The bytes as a vector, copying only when borrowed (into a recycled
    /// buffer when the payload is large; see `buffer_pool`).
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            Payload::Borrowed(b) => crate::buffer_pool::copy_of(b),
            Payload::Owned(v) => v,
        }
    }
}

/// What happened while reading.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// (Server) a complete request head. Answer with [`Connection::accept`] or
    /// [`Connection::respond`]; until then the connection reads nothing more.
    Request(Request),
    /// (Server) the request could not be parsed; the error response is in the sink
    /// and the connection is closed.
    HandshakeFailed(HandshakeError),
    /// A complete text or binary message. Text is valid UTF-8.
    Message(MessageKind, Payload<'a>),
    /// A ping; the pong with the same payload is already in the sink.
    Ping(&'a [u8]),
    /// A pong (an answer to our ping, or unsolicited).
    Pong(&'a [u8]),
    /// The peer's close frame. If it started the closing handshake, our answer is
    /// in the sink. Either way the connection is now closed.
    Close(CloseFrame<'a>),
    /// The peer broke the protocol; our close frame with the matching code is in
    /// the sink and the connection is closed.
    Failed(ProtocolError),
}

/// The result of one [`Connection::read`] step.
#[derive(Debug)]
pub struct Read<'a> {
    /// Bytes of the input used up; the caller passes the rest again next time.
    pub consumed: usize,
    /// What happened, if anything.
    pub event: Option<Event<'a>>,
}

impl Read<'_> {
    /// Nothing consumed and nothing happened: more input is needed.
    pub fn needs_input(&self) -> bool {
        self.consumed == 0 && self.event.is_none()
    }
}

/// A timer that fired in [`Connection::handle_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// The request head did not arrive in time; the connection is closed, nothing sent.
    Handshake,
    /// Nothing arrived for the idle timeout; a close (1001) is in the sink.
    Idle,
    /// A ping went unanswered; a close (1001) is in the sink and the connection is closed.
    Pong,
    /// The peer did not answer our close frame in time; the connection is closed.
    Close,
}

/// Why a send was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The connection is not open (still handshaking, closing or closed).
    NotOpen,
    /// A control frame payload over 125 bytes.
    ControlTooLong,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::NotOpen => "connection is not open",
            SendError::ControlTooLong => "control payload over 125 bytes",
        })
    }
}

impl std::error::Error for SendError {}

/// The coarse state, for callers that only need to know where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Reading or deciding on the request head.
    Handshaking,
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's.
    Closing,
    /// Nothing more will be read or written; the transport can be closed once the sink is flushed.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingRequest,
    Deciding,
    Open,
    CloseSent,
    Closed,
}

/// [`Connection::options`]: keep back the close frame that answers the peer
/// (see [`Connection::hold_close_reply`]).
const HOLD_CLOSE: u8 = 1;
/// [`Connection::options`]: hand whole messages out owned (see
/// [`Connection::own_messages`]).
const OWN_MESSAGES: u8 = 2;
/// [`Connection::options`]: still lend small whole messages while owning
/// the rest (see [`Connection::lend_small_messages`]).
const LEND_SMALL: u8 = 4;

/// The largest whole message [`Connection::lend_small_messages`] lends.
pub const LENT_MESSAGE_MAX: usize = 4096;

/// A data frame whose payload is still arriving.
#[derive(Debug, Clone, Copy)]
struct PartialFrame {
    remaining: u64,
    mask: [u8; 4],
    mask_phase: u8,
    fin: bool,
}

/// What a connection knows of a frame or message still arriving. Boxed
/// (and the box kept per thread between uses): an idle connection, which
/// has none, carries one word for it.
#[derive(Debug, Default)]
struct InProgress {
    /// The payload of a data frame in progress.
    frame: Option<PartialFrame>,
    /// The kind of the message in progress (fragmented, or one frame still arriving).
    message: Option<MessageKind>,
    /// Bytes of the message in progress; empty (and unallocated) between messages.
    assembled: Vec<u8>,
    utf8: Utf8Validator,
    /// The message in progress arrived with RSV1: inflate it when complete.
    compressed: bool,
}

/// Emptied [`InProgress`] boxes kept per thread.
const SPARE_MAX: usize = 256;

thread_local! {
    static SPARE: Stock<InProgress> = const { RefCell::new(Spares::new(SPARE_MAX)) };
}

/// Frees the progress boxes this thread kept and did not reuse since the
/// last call; returns how many it still keeps. (The event loop calls it once
/// a second.)
pub(crate) fn trim_spares() -> usize {
    crate::spares::trim(&SPARE)
}

/// One WebSocket connection's protocol state.
#[derive(Debug)]
pub struct Connection {
    config: Arc<ProtocolConfig>,
    /// A client's xorshift32 state for its mask keys, never 0; 0 for a
    /// server, which masks nothing. It is also the role: a separate role
    /// byte and a 64-bit state made every server connection 8 bytes larger.
    mask_state: u32,
    phase: Phase,
    /// A frame or message still arriving; none between messages.
    progress: Option<Box<InProgress>>,
    /// When the current phase began (handshake start, close sent).
    phase_since: Moment,
    /// When the peer last sent anything.
    last_activity: Moment,
    /// When our unanswered keep-alive ping left.
    ping_sent: Moment,
    /// permessage-deflate, when negotiated.
    deflate: Option<Box<DeflateSession>>,
    /// The caller's choices, as bits ([`HOLD_CLOSE`], [`OWN_MESSAGES`],
    /// [`LEND_SMALL`]): one byte keeps the connection within 64 bytes.
    options: u8,
    /// That close frame, encoded, until [`Connection::release_close_reply`].
    // Boxed twice: one word in every connection for a frame held only
    // while a close is under way.
    #[allow(clippy::box_collection)]
    held_close: Option<Box<Vec<u8>>>,
    /// The code of the close we started (0: we started none).
    started_close: u16,
}

/// A negotiated permessage-deflate and the zlib state this connection owns
/// (none in shared mode; created at first use in dedicated mode).
#[derive(Debug)]
struct DeflateSession {
    agreed: Agreed,
    /// Our direction: window, and whether context is dropped after each message.
    send_window: u8,
    send_reset: bool,
    /// The peer's direction.
    recv_window: u8,
    recv_reset: bool,
    compressor: Option<Compressor>,
    decompressor: Option<Decompressor>,
}

impl DeflateSession {
    fn new(agreed: Agreed, role: Role) -> DeflateSession {
        let (send_window, send_reset, recv_window, recv_reset) = match role {
            Role::Server => (
                agreed.server_max_window_bits,
                agreed.server_no_context_takeover,
                agreed.client_max_window_bits,
                agreed.client_no_context_takeover,
            ),
            Role::Client => (
                agreed.client_max_window_bits,
                agreed.client_no_context_takeover,
                agreed.server_max_window_bits,
                agreed.server_no_context_takeover,
            ),
        };
        DeflateSession {
            agreed,
            send_window,
            send_reset,
            recv_window,
            recv_reset,
            compressor: None,
            decompressor: None,
        }
    }

    fn compress(&mut self, opts: &DeflateOptions, data: &[u8], out: &mut Vec<u8>) {
        if self.send_reset {
            deflate::compress_stateless(data, opts.level, self.send_window, opts.mem_level, out);
        } else {
            let window = self.send_window;
            self.compressor
                .get_or_insert_with(|| Compressor::new(opts.level, window, opts.mem_level))
                .compress(data, out, false);
        }
    }

    fn inflate(&mut self, data: &[u8], cap: usize) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        if self.recv_reset {
            deflate::inflate_stateless(data, cap, &mut out)?;
        } else {
            let window = self.recv_window;
            self.decompressor
                .get_or_insert_with(|| Decompressor::new(window))
                .inflate(data, cap, &mut out, false)?;
        }
        Ok(out)
    }
}

/// Reserve at most this much ahead for a message the header announces: the
/// peer has not sent the bytes yet, so don't let it make us allocate them.
const MAX_RESERVE_AHEAD: u64 = 64 * 1024;

impl Connection {
    /// A server connection waiting for the request head.
    pub fn server(config: Arc<ProtocolConfig>, now: Instant) -> Self {
        Self::with_phase(config, Phase::AwaitingRequest, now, 0)
    }

    /// A client connection whose handshake is already done (see
    /// [`super::client`]). `mask_seed` seeds the mask keys; any non-zero value.
    pub fn client(config: Arc<ProtocolConfig>, now: Instant, mask_seed: u64) -> Self {
        let folded = (mask_seed ^ (mask_seed >> 32)) as u32;
        Self::with_phase(config, Phase::Open, now, folded | 1)
    }

    /// `mask_state`: 0 for a server, a client's non-zero seed.
    fn with_phase(
        config: Arc<ProtocolConfig>,
        phase: Phase,
        now: Instant,
        mask_state: u32,
    ) -> Self {
        Connection {
            config,
            mask_state,
            phase,
            progress: None,
            phase_since: Moment::of(now),
            last_activity: Moment::of(now),
            ping_sent: Moment::NONE,
            deflate: None,
            options: 0,
            started_close: 0,
            held_close: None,
        }
    }

    /// Server or client.
    pub fn role(&self) -> Role {
        if self.mask_state == 0 {
            Role::Server
        } else {
            Role::Client
        }
    }

    /// The configuration the connection was made with.
    pub fn config(&self) -> &Arc<ProtocolConfig> {
        &self.config
    }

    /// Where the connection stands.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::AwaitingRequest | Phase::Deciding => State::Handshaking,
            Phase::Open => State::Open,
            Phase::CloseSent => State::Closing,
            Phase::Closed => State::Closed,
        }
    }

    /// Messages can be sent and received.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Nothing more will be read or written.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// When the connection reached [`State::Closed`], if it has: the start of
    /// the wait for the peer to read our last bytes and hang up.
    pub fn closed_since(&self) -> Option<Instant> {
        (self.phase == Phase::Closed).then(|| self.phase_since.at())
    }

    /// Bytes of an unfinished incoming message held by this connection.
    pub fn buffered_incoming(&self) -> usize {
        self.progress.as_ref().map_or(0, |p| p.assembled.len())
    }

    /// The data frame whose payload is arriving, if one is.
    fn frame(&self) -> Option<PartialFrame> {
        self.progress.as_ref().and_then(|p| p.frame)
    }

    /// The kind of the message arriving, if one is.
    fn message(&self) -> Option<MessageKind> {
        self.progress.as_ref().and_then(|p| p.message)
    }

    /// What is arriving, made when something starts to.
    fn progress_mut(&mut self) -> &mut InProgress {
        self.progress
            .get_or_insert_with(|| crate::spares::take(&SPARE))
    }

    /// Gives the progress box back once no frame or message is arriving.
    fn settle_progress(&mut self) {
        if self
            .progress
            .as_ref()
            .is_some_and(|p| p.frame.is_none() && p.message.is_none())
        {
            self.drop_progress();
        }
    }

    /// Forgets whatever was arriving.
    fn drop_progress(&mut self) {
        if let Some(mut p) = self.progress.take() {
            *p = InProgress::default();
            crate::spares::give(&SPARE, p);
        }
    }

    fn next_mask(&mut self) -> Option<[u8; 4]> {
        if self.mask_state == 0 {
            return None;
        }
        // xorshift32 (13, 17, 5): never 0 from a non-zero state.
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        Some(x.to_ne_bytes())
    }

    fn decode_rules(&self) -> DecodeRules {
        DecodeRules {
            expect_masked: self.role() == Role::Server,
            allow_rsv1: self.deflate.is_some(),
        }
    }

    /// The permessage-deflate agreement, if one was negotiated.
    pub fn deflate(&self) -> Option<Agreed> {
        self.deflate.as_ref().map(|d| d.agreed)
    }

    /// Turns permessage-deflate on with what the handshake agreed (for
    /// clients, which negotiate outside this type; servers do it in `accept`).
    pub fn enable_deflate(&mut self, agreed: Agreed) {
        self.deflate = Some(Box::new(DeflateSession::new(agreed, self.role())));
    }

    fn enter(&mut self, phase: Phase, now: Instant) {
        self.phase = phase;
        self.phase_since = Moment::of(now);
        if phase == Phase::Closed {
            self.drop_progress();
        }
    }

    /// Consumes bytes from the front of `input` and reports at most one event.
    /// Call it again with the unconsumed rest until [`Read::needs_input`].
    pub fn read<'a, S: Sink + ?Sized>(
        &'a mut self,
        input: &'a mut [u8],
        now: Instant,
        sink: &mut S,
    ) -> Read<'a> {
        if !input.is_empty() {
            self.last_activity = Moment::of(now);
            self.ping_sent = Moment::NONE;
        }
        match self.phase {
            Phase::AwaitingRequest => self.read_request(input, now, sink),
            Phase::Deciding => Read {
                consumed: 0,
                event: None,
            },
            Phase::Open | Phase::CloseSent => self.read_frames(input, now, sink),
            Phase::Closed => Read {
                consumed: input.len(),
                event: None,
            },
        }
    }

    fn read_request<'a, S: Sink + ?Sized>(
        &mut self,
        input: &'a [u8],
        now: Instant,
        sink: &mut S,
    ) -> Read<'a> {
        match Request::parse(input, &self.config.handshake) {
            Ok(None) => Read {
                consumed: 0,
                event: None,
            },
            Ok(Some((request, n))) => {
                self.phase = Phase::Deciding;
                Read {
                    consumed: n,
                    event: Some(Event::Request(request)),
                }
            }
            Err(e) => {
                self.write_handshake_error(e, sink);
                self.enter(Phase::Closed, now);
                Read {
                    consumed: input.len(),
                    event: Some(Event::HandshakeFailed(e)),
                }
            }
        }
    }

    fn write_handshake_error<S: Sink + ?Sized>(&self, e: HandshakeError, sink: &mut S) {
        let mut buf = [0u8; 512];
        let n = e
            .write_response(&mut buf)
            .expect("error responses fit in 512 bytes");
        sink.write(&buf[..n]);
    }

    /// Accepts the request delivered by [`Event::Request`]: validates it as an
    /// upgrade and writes the 101 response, or, when it is not a valid upgrade,
    /// writes the matching error response, closes, and returns the error.
    pub fn accept<S: Sink + ?Sized>(
        &mut self,
        request: &Request,
        opts: &AcceptOptions<'_>,
        now: Instant,
        sink: &mut S,
    ) -> Result<(), HandshakeError> {
        if self.phase != Phase::Deciding {
            return Err(HandshakeError::Malformed);
        }
        let key = match request.validate_upgrade() {
            Ok(key) => key,
            Err(e) => {
                self.write_handshake_error(e, sink);
                self.enter(Phase::Closed, now);
                return Err(e);
            }
        };
        let negotiated = match opts.extensions {
            None => deflate::negotiate(request.extensions(), &self.config.deflate),
            Some(_) => None,
        };
        let with_deflate;
        let opts = match &negotiated {
            Some((_, response)) => {
                with_deflate = AcceptOptions {
                    extensions: Some(response),
                    ..*opts
                };
                &with_deflate
            }
            None => opts,
        };
        let mut stack = [0u8; 1024];
        match handshake::write_accept(key, opts, &mut stack) {
            Ok(n) => sink.write(&stack[..n]),
            Err(_) => {
                // Larger than the stack buffer (many extra headers), or a header with
                // CR/LF in it; try once with room to spare before calling it invalid.
                let mut heap = vec![0u8; 64 * 1024];
                match handshake::write_accept(key, opts, &mut heap) {
                    Ok(n) => sink.write(&heap[..n]),
                    Err(_) => {
                        self.respond(500, &[], b"invalid response header", now, sink);
                        return Err(HandshakeError::Malformed);
                    }
                }
            }
        }
        if let Some((agreed, _)) = negotiated {
            self.enable_deflate(agreed);
        }
        self.enter(Phase::Open, now);
        self.last_activity = Moment::of(now);
        Ok(())
    }

    /// Answers the request with a plain HTTP response (a rejection, or a page
    /// for a request that was not an upgrade) and closes.
    pub fn respond<S: Sink + ?Sized>(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
        now: Instant,
        sink: &mut S,
    ) {
        if matches!(self.phase, Phase::AwaitingRequest | Phase::Deciding) {
            sink.write(&handshake::response_vec(status, headers, body));
        }
        self.enter(Phase::Closed, now);
    }

    fn read_frames<'a, S: Sink + ?Sized>(
        &mut self,
        input: &'a mut [u8],
        now: Instant,
        sink: &mut S,
    ) -> Read<'a> {
        if let Some(partial) = self.frame() {
            return self.read_payload(partial, input, 0, now, sink);
        }
        let (header, head_len) = match FrameHeader::decode(input, self.decode_rules()) {
            Ok(None) => {
                return Read {
                    consumed: 0,
                    event: None,
                }
            }
            Ok(Some(h)) => h,
            Err(e) => return self.fail(e, input.len(), now, sink),
        };
        if header.opcode.is_control() {
            return self.read_control(header, head_len, input, now, sink);
        }
        let kind = match self.check_data_frame(&header) {
            Ok(kind) => kind,
            Err(e) => return self.fail(e, input.len(), now, sink),
        };
        let closing = self.phase == Phase::CloseSent;
        let len = header.payload_len;
        let whole_frame_here = (input.len() - head_len) as u64 >= len;
        if !closing && header.fin && self.message().is_none() && whole_frame_here {
            return self.read_whole_message(kind, &header, head_len, input, now, sink);
        }
        let partial = PartialFrame {
            remaining: len,
            mask: header.mask.unwrap_or([0; 4]),
            mask_phase: 0,
            fin: header.fin,
        };
        let p = self.progress_mut();
        if !closing {
            if p.message.is_none() {
                p.message = Some(kind);
                p.compressed = header.rsv1;
                p.utf8.reset();
            }
            let ahead = len.min(MAX_RESERVE_AHEAD) as usize;
            if p.assembled.capacity() == 0 {
                // A new message: a recycled buffer when it is large, one
                // that holds the whole frame if one is kept.
                let declared = usize::try_from(len).unwrap_or(usize::MAX);
                p.assembled = crate::buffer_pool::take_for(ahead, declared);
            } else {
                p.assembled.reserve(ahead);
            }
        }
        p.frame = Some(partial);
        self.read_payload(partial, input, head_len, now, sink)
    }

    /// A control frame, once all of it is in `input` (at most 139 bytes:
    /// until then the caller keeps them and comes back).
    fn read_control<'a, S: Sink + ?Sized>(
        &mut self,
        header: FrameHeader,
        head_len: usize,
        input: &'a mut [u8],
        now: Instant,
        sink: &mut S,
    ) -> Read<'a> {
        let total = head_len + header.payload_len as usize;
        if input.len() < total {
            return Read {
                consumed: 0,
                event: None,
            };
        }
        let payload = &mut input[head_len..total];
        if let Some(key) = header.mask {
            apply_mask(payload, key, 0);
        }
        let event = self.on_control(header.opcode, payload, now, sink);
        Read {
            consumed: total,
            event,
        }
    }

    /// Checks a data frame's header against the message in progress and the
    /// limits, before a single payload byte is accepted; returns the kind of
    /// the message it belongs to. While closing, data is read and dropped.
    fn check_data_frame(&self, header: &FrameHeader) -> Result<MessageKind, ProtocolError> {
        let closing = self.phase == Phase::CloseSent;
        if header.rsv1 && header.opcode == OpCode::Continuation && !closing {
            // RSV1 marks a compressed message on its first frame only (RFC 7692 section 6).
            return Err(ProtocolError::ReservedBits);
        }
        let kind = match (header.opcode, self.message()) {
            (OpCode::Continuation, Some(kind)) => kind,
            (OpCode::Continuation, None) if !closing => {
                return Err(ProtocolError::UnexpectedContinuation)
            }
            (OpCode::Text | OpCode::Binary, Some(_)) if !closing => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            (OpCode::Text, _) => MessageKind::Text,
            _ => MessageKind::Binary,
        };
        if !closing {
            // The limits are on messages as the application sees them: a
            // compressed one may carry deflate's overhead on the wire, and
            // is held to its limit again as it is inflated.
            let compressed = match header.opcode {
                OpCode::Continuation => self.progress.as_ref().is_some_and(|p| p.compressed),
                _ => header.rsv1,
            };
            let on_wire = |limit: u64| {
                if compressed {
                    deflate::compressed_bound(limit)
                } else {
                    limit
                }
            };
            if header.payload_len > on_wire(self.config.max_frame_size) {
                return Err(ProtocolError::FrameTooBig);
            }
            if self.buffered_incoming() as u64 + header.payload_len
                > on_wire(self.config.max_message_size)
            {
                return Err(ProtocolError::MessageTooBig);
            }
        }
        Ok(kind)
    }

    /// The fast path: a whole unfragmented message in the buffer, unmasked
    /// and checked in place and handed out as a slice of it.
    fn read_whole_message<'a, S: Sink + ?Sized>(
        &mut self,
        kind: MessageKind,
        header: &FrameHeader,
        head_len: usize,
        input: &'a mut [u8],
        now: Instant,
        sink: &mut S,
    ) -> Read<'a> {
        let input_len = input.len();
        let consumed = head_len + header.payload_len as usize;
        let payload = &mut input[head_len..consumed];
        if let Some(key) = header.mask {
            if self.option(OWN_MESSAGES)
                && !header.rsv1
                && !(self.option(LEND_SMALL) && payload.len() <= LENT_MESSAGE_MAX)
            {
                let mut data = crate::buffer_pool::take(payload.len());
                extend_masked(&mut data, payload, key, 0);
                if kind == MessageKind::Text && utf8::validate(&data).is_err() {
                    crate::buffer_pool::give(data);
                    return self.fail(ProtocolError::InvalidUtf8, input_len, now, sink);
                }
                return Read {
                    consumed,
                    event: Some(Event::Message(kind, Payload::Owned(data))),
                };
            }
            apply_mask(payload, key, 0);
        }
        if header.rsv1 {
            return match self.inflate_message(kind, payload) {
                Ok(data) => Read {
                    consumed,
                    event: Some(Event::Message(kind, Payload::Owned(data))),
                },
                Err(e) => self.fail(e, input_len, now, sink),
            };
        }
        if kind == MessageKind::Text && utf8::validate(payload).is_err() {
            return self.fail(ProtocolError::InvalidUtf8, input_len, now, sink);
        }
        Read {
            consumed,
            event: Some(Event::Message(kind, Payload::Borrowed(payload))),
        }
    }

    /// Takes what is available of a data frame's payload, starting at `input[at..]`.
    fn read_payload<'a, S: Sink + ?Sized>(
        &mut self,
        partial: PartialFrame,
        input: &'a mut [u8],
        at: usize,
        now: Instant,
        sink: &mut S,
    ) -> Read<'a> {
        let available = (input.len() - at) as u64;
        let take = partial.remaining.min(available) as usize;
        let input_len = input.len();
        let chunk = &input[at..at + take];
        let remaining = partial.remaining - take as u64;
        let frame_done = remaining == 0;
        let consumed = at + take;
        let closing = self.phase == Phase::CloseSent;
        let unmask = self.role() == Role::Server;
        let p = self.progress_mut();
        p.frame = (!frame_done).then_some(PartialFrame {
            remaining,
            ..partial
        });
        if closing {
            // After our close, data is ignored: skip it without looking.
            self.settle_progress();
            return Read {
                consumed,
                event: None,
            };
        }
        // Unmasked as it is copied into the message (one pass, see
        // `own_messages`).
        let start = p.assembled.len();
        if unmask {
            let phase = extend_masked(
                &mut p.assembled,
                chunk,
                partial.mask,
                partial.mask_phase as usize,
            ) as u8;
            if let Some(f) = p.frame.as_mut() {
                f.mask_phase = phase;
            }
        } else {
            p.assembled.extend_from_slice(chunk);
        }
        let kind = p
            .message
            .expect("a data frame in progress belongs to a message");
        let message_done = frame_done && partial.fin;
        // Compressed text is checked once inflated, at the end.
        if kind == MessageKind::Text
            && !p.compressed
            && p.utf8.feed(&p.assembled[start..], message_done).is_err()
        {
            return self.fail(ProtocolError::InvalidUtf8, input_len, now, sink);
        }
        if !message_done {
            return Read {
                consumed,
                event: None,
            };
        }
        p.message = None;
        let mut data = std::mem::take(&mut p.assembled);
        let compressed = std::mem::take(&mut p.compressed);
        self.settle_progress();
        if compressed {
            data = match self.inflate_message(kind, &data) {
                Ok(d) => d,
                Err(e) => return self.fail(e, input_len, now, sink),
            };
        }
        Read {
            consumed,
            event: Some(Event::Message(kind, Payload::Owned(data))),
        }
    }

    /// Inflates a complete compressed message under the message limit and
    /// checks text for UTF-8.
    fn inflate_message(
        &mut self,
        kind: MessageKind,
        compressed: &[u8],
    ) -> Result<Vec<u8>, ProtocolError> {
        let cap = usize::try_from(self.config.max_message_size).unwrap_or(usize::MAX);
        let session = self.deflate.as_mut().ok_or(ProtocolError::ReservedBits)?;
        let data = session.inflate(compressed, cap).map_err(|e| match e {
            InflateError::TooBig => ProtocolError::MessageTooBig,
            InflateError::Corrupt => ProtocolError::BadCompression,
        })?;
        if kind == MessageKind::Text && utf8::validate(&data).is_err() {
            return Err(ProtocolError::InvalidUtf8);
        }
        Ok(data)
    }

    /// Whether a message of `len` bytes goes out compressed.
    fn compresses(&self, len: usize) -> bool {
        self.deflate.is_some() && len >= self.config.deflate.threshold
    }

    fn on_control<'a, S: Sink + ?Sized>(
        &mut self,
        opcode: OpCode,
        payload: &'a [u8],
        now: Instant,
        sink: &mut S,
    ) -> Option<Event<'a>> {
        match opcode {
            OpCode::Ping => {
                if self.phase == Phase::Open {
                    self.write_frame(OpCode::Pong, true, payload, sink);
                }
                Some(Event::Ping(payload))
            }
            OpCode::Pong => Some(Event::Pong(payload)),
            _ => {
                let frame = match close::parse_close_payload(payload) {
                    Ok(f) => f,
                    Err(e) => {
                        let err = if e.close_code() == code::INVALID_PAYLOAD {
                            ProtocolError::InvalidCloseReason
                        } else {
                            ProtocolError::InvalidClosePayload
                        };
                        return self.fail(err, 0, now, sink).event;
                    }
                };
                if self.phase == Phase::Open {
                    // Echo the code and reason (RFC 6455 section 5.5.1, as Node's ws
                    // does): a browser that closed with a reason sees it in onclose.
                    // An empty close gets an empty answer.
                    self.write_reply_close(frame.code, frame.reason, sink);
                }
                self.enter(Phase::Closed, now);
                Some(Event::Close(frame))
            }
        }
    }

    /// The close frame that ends the connection from [`Connection::read`]:
    /// written now, or kept back while [`Connection::hold_close_reply`] is set.
    fn write_reply_close<S: Sink + ?Sized>(&mut self, code: u16, reason: &str, sink: &mut S) {
        if self.option(HOLD_CLOSE) {
            let mut frame = Vec::with_capacity(2 + MAX_CONTROL_PAYLOAD);
            self.write_close(code, reason, &mut frame);
            self.held_close = Some(Box::new(frame));
        } else {
            self.write_close(code, reason, sink);
        }
    }

    /// While `hold` is set, the close frame that [`Connection::read`] writes
    /// when the peer closes or breaks the protocol is kept back rather than
    /// written, until [`Connection::release_close_reply`]. A runtime that
    /// hands messages to another thread sets it, so the replies to messages
    /// that arrived before the close can still go out before our close frame.
    pub fn hold_close_reply(&mut self, hold: bool) {
        self.set_option(HOLD_CLOSE, hold);
    }

    /// While `own` is set, a server hands out every message as
    /// [`Payload::Owned`], a frame that arrived whole included: unmasked
    /// straight from the input into a recycled buffer (see `buffer_pool`).
    /// A caller that keeps each message anyway (the server's loop, which
    /// hands them to handlers) then passes over the payload once; unmasking
    /// it in place and then copying it took two passes (criterion
    /// `mask/extend_masked` against `mask/in_place_then_copy`: 1 KiB 22 →
    /// 9.6 ns, 16 KiB 224 → 116 ns, 1 MiB 25 → 18 µs).
    pub fn own_messages(&mut self, own: bool) {
        self.set_option(OWN_MESSAGES, own);
    }

    /// While set (with [`own_messages`](Self::own_messages)), a whole
    /// unfragmented frame of at most [`LENT_MESSAGE_MAX`] bytes is still
    /// unmasked in place and lent ([`Payload::Borrowed`]); larger and
    /// assembled ones stay owned. For a caller that can use a small message
    /// where it lies (the server's loop with an inline handler, or a relay
    /// that only publishes it): a buffer taken and given back per message
    /// costs more than the message's bytes there, while a large message is
    /// as cheap to unmask into a buffer of its own as in place, and is then
    /// sent on without another copy.
    pub fn lend_small_messages(&mut self, lend: bool) {
        self.set_option(LEND_SMALL, lend);
    }

    fn option(&self, bit: u8) -> bool {
        self.options & bit != 0
    }

    fn set_option(&mut self, bit: u8, on: bool) {
        if on {
            self.options |= bit;
        } else {
            self.options &= !bit;
        }
    }

    /// A close frame is being kept back (see [`Connection::hold_close_reply`]).
    pub fn holds_close_reply(&self) -> bool {
        self.held_close.is_some()
    }

    /// Writes the close frame kept back, if any; says whether there was one.
    pub fn release_close_reply<S: Sink + ?Sized>(&mut self, sink: &mut S) -> bool {
        match self.held_close.take() {
            Some(frame) => {
                sink.write(&frame);
                true
            }
            None => false,
        }
    }

    fn write_close<S: Sink + ?Sized>(&mut self, code: u16, reason: &str, sink: &mut S) {
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        let n = close::write_close_payload(code, reason, &mut payload);
        self.write_frame(OpCode::Close, true, &payload[..n], sink);
    }

    /// Writes one frame, masked when we are the client.
    fn write_frame<S: Sink + ?Sized>(
        &mut self,
        opcode: OpCode,
        fin: bool,
        payload: &[u8],
        sink: &mut S,
    ) {
        let mask = self.next_mask();
        let head = EncodedHeader::new(opcode, fin, false, payload.len() as u64, mask);
        sink.frame(head.as_bytes(), payload, mask);
    }

    fn fail<'a, S: Sink + ?Sized>(
        &mut self,
        err: ProtocolError,
        consumed: usize,
        now: Instant,
        sink: &mut S,
    ) -> Read<'a> {
        if self.phase == Phase::Open {
            self.write_reply_close(err.close_code(), err.reason(), sink);
        }
        self.enter(Phase::Closed, now);
        Read {
            consumed,
            event: Some(Event::Failed(err)),
        }
    }

    /// The frame header for sending a message of `len` bytes, for callers that
    /// write header and payload themselves (one vectored write, shared payloads).
    /// Only servers can do this: a client must mask, see [`Connection::send`].
    pub fn message_header(
        &self,
        kind: MessageKind,
        len: usize,
    ) -> Result<EncodedHeader, SendError> {
        if self.phase != Phase::Open {
            return Err(SendError::NotOpen);
        }
        debug_assert_eq!(self.role(), Role::Server);
        Ok(EncodedHeader::new(
            kind.opcode(),
            true,
            false,
            len as u64,
            None,
        ))
    }

    /// Sends a whole message as one frame, compressed when permessage-deflate
    /// was negotiated and the message reaches the configured threshold.
    pub fn send<S: Sink + ?Sized>(
        &mut self,
        kind: MessageKind,
        payload: &[u8],
        sink: &mut S,
    ) -> Result<(), SendError> {
        if self.phase == Phase::Open && self.compresses(payload.len()) {
            let mut z = Vec::new();
            let opts = self.config.deflate;
            self.deflate
                .as_mut()
                .expect("compresses() checked")
                .compress(&opts, payload, &mut z);
            let mask = self.next_mask();
            let head = EncodedHeader::new(kind.opcode(), true, true, z.len() as u64, mask);
            sink.frame(head.as_bytes(), &z, mask);
            return Ok(());
        }
        self.send_fragment(kind, true, true, payload, sink)
    }

    /// Sends one fragment of a message: `first` picks the opcode, `fin` ends it.
    pub fn send_fragment<S: Sink + ?Sized>(
        &mut self,
        kind: MessageKind,
        first: bool,
        fin: bool,
        payload: &[u8],
        sink: &mut S,
    ) -> Result<(), SendError> {
        if self.phase != Phase::Open {
            return Err(SendError::NotOpen);
        }
        let opcode = if first {
            kind.opcode()
        } else {
            OpCode::Continuation
        };
        self.write_frame(opcode, fin, payload, sink);
        Ok(())
    }

    /// Sends a ping (payload at most 125 bytes).
    pub fn ping<S: Sink + ?Sized>(
        &mut self,
        payload: &[u8],
        sink: &mut S,
    ) -> Result<(), SendError> {
        self.control(OpCode::Ping, payload, sink)
    }

    /// Sends an unsolicited pong (payload at most 125 bytes).
    pub fn pong<S: Sink + ?Sized>(
        &mut self,
        payload: &[u8],
        sink: &mut S,
    ) -> Result<(), SendError> {
        self.control(OpCode::Pong, payload, sink)
    }

    fn control<S: Sink + ?Sized>(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        sink: &mut S,
    ) -> Result<(), SendError> {
        if self.phase != Phase::Open {
            return Err(SendError::NotOpen);
        }
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlTooLong);
        }
        self.write_frame(opcode, true, payload, sink);
        Ok(())
    }

    /// Starts the closing handshake: sends our close frame and waits (up to the
    /// close timeout) for the peer's. `code` 1005 sends an empty close payload;
    /// other codes that may not go on the wire are sent as 1000.
    pub fn close<S: Sink + ?Sized>(
        &mut self,
        code: u16,
        reason: &str,
        now: Instant,
        sink: &mut S,
    ) -> Result<(), SendError> {
        match self.phase {
            Phase::Open => {
                let code = if code == code::NO_STATUS || close::is_valid_wire_code(code) {
                    code
                } else {
                    code::NORMAL
                };
                self.write_close(code, reason, sink);
                self.started_close = code;
                // What arrives of a message from here on is dropped; the
                // rest of a frame under way is still skipped.
                if let Some(p) = self.progress.as_mut() {
                    p.message = None;
                    p.assembled = Vec::new();
                }
                self.settle_progress();
                self.enter(Phase::CloseSent, now);
                Ok(())
            }
            Phase::AwaitingRequest | Phase::Deciding => {
                self.enter(Phase::Closed, now);
                Ok(())
            }
            Phase::CloseSent | Phase::Closed => Err(SendError::NotOpen),
        }
    }

    /// The transport ended (EOF or error): nothing more can happen.
    pub fn transport_closed(&mut self, now: Instant) {
        self.enter(Phase::Closed, now);
    }

    /// When the current phase began: for a server connection still reading
    /// its request, when it was created (its accept).
    pub fn phase_since(&self) -> Instant {
        self.phase_since.at()
    }

    /// The code of the closing handshake this side started ([`Connection::close`],
    /// or the idle timeout), if it started one: why the connection ended,
    /// when the peer never answers.
    pub fn started_close(&self) -> Option<u16> {
        (self.started_close != 0).then_some(self.started_close)
    }

    /// What, besides activity, decides [`poll_timeout`](Self::poll_timeout):
    /// the phase and whether a ping waits for its pong. Activity only moves
    /// the timeout later; only a change of this key can move it sooner. A
    /// driver that keeps a wake-up at or before the timeout computed under
    /// one key can skip asking again until the key changes (the server's
    /// loop does, after every write). The value means nothing beyond that.
    pub fn timeout_key(&self) -> u8 {
        self.phase as u8 | u8::from(!self.ping_sent.is_none()) << 4
    }

    /// The next instant at which [`Connection::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let c = &self.config;
        match self.phase {
            Phase::AwaitingRequest | Phase::Deciding => {
                c.handshake_timeout.map(|t| self.phase_since.at() + t)
            }
            Phase::Open => {
                let active = self.last_activity.at();
                let idle = c.idle_timeout.map(|t| active + t);
                let keepalive = match self.ping_sent.get() {
                    Some(sent) => Some(sent + c.pong_timeout),
                    None => c.ping_interval.map(|t| active + t),
                };
                match (idle, keepalive) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Phase::CloseSent => Some(self.phase_since.at() + c.close_timeout),
            Phase::Closed => None,
        }
    }

    /// Acts on every timer due at `now`: sends keep-alive pings, closes idle or
    /// unresponsive connections, gives up on slow handshakes and close handshakes.
    pub fn handle_timeout<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        sink: &mut S,
    ) -> Option<Timeout> {
        let c = Arc::clone(&self.config);
        match self.phase {
            Phase::AwaitingRequest | Phase::Deciding => {
                if c.handshake_timeout
                    .is_some_and(|t| now >= self.phase_since.at() + t)
                {
                    self.enter(Phase::Closed, now);
                    return Some(Timeout::Handshake);
                }
            }
            Phase::Open => {
                if let Some(sent) = self.ping_sent.get() {
                    if now >= sent + c.pong_timeout {
                        self.write_close(code::GOING_AWAY, "ping timeout", sink);
                        self.enter(Phase::Closed, now);
                        return Some(Timeout::Pong);
                    }
                }
                if c.idle_timeout
                    .is_some_and(|t| now >= self.last_activity.at() + t)
                {
                    self.write_close(code::GOING_AWAY, "idle timeout", sink);
                    self.started_close = code::GOING_AWAY;
                    self.enter(Phase::CloseSent, now);
                    return Some(Timeout::Idle);
                }
                if self.ping_sent.is_none()
                    && c.ping_interval
                        .is_some_and(|t| now >= self.last_activity.at() + t)
                {
                    self.write_frame(OpCode::Ping, true, b"", sink);
                    self.ping_sent = Moment::of(now);
                }
            }
            Phase::CloseSent => {
                if now >= self.phase_since.at() + c.close_timeout {
                    self.enter(Phase::Closed, now);
                    return Some(Timeout::Close);
                }
            }
            Phase::Closed => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every open connection carries one: a server's idle memory is mostly
    /// this and the runtime's slot around it.
    #[test]
    fn a_connection_is_64_bytes() {
        assert!(std::mem::size_of::<Connection>() <= 64);
    }
}
