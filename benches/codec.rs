//! Codec microbenchmarks: frame header decode/encode, masking (fast path and
//! reference), UTF-8 validation, handshake parsing. Throughput is in bytes.
//!   cargo bench --bench codec

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::Arc;
use std::time::Instant;

use sockwave::protocol::frame::{DecodeRules, EncodedHeader, FrameHeader};
use sockwave::protocol::handshake::{accept_key, HandshakeLimits, Request};
use sockwave::protocol::mask::{apply_mask, apply_mask_reference, extend_masked};
use sockwave::protocol::utf8::{self, Utf8Validator};
use sockwave::protocol::{AcceptOptions, Connection, Event, OpCode, ProtocolConfig};

const SIZES: [usize; 5] = [16, 128, 1024, 16 * 1024, 1 << 20];

fn masking(c: &mut Criterion) {
    let mut g = c.benchmark_group("mask");
    for size in SIZES {
        let mut buf = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("fast", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), [1, 2, 3, 4], 0))
        });
        g.bench_with_input(BenchmarkId::new("reference", size), &size, |b, _| {
            b.iter(|| apply_mask_reference(black_box(&mut buf), [1, 2, 3, 4], 0))
        });
        // A payload a reader keeps: unmasked in place and then copied, or
        // unmasked while copied.
        let mut kept = Vec::with_capacity(size);
        g.bench_with_input(
            BenchmarkId::new("in_place_then_copy", size),
            &size,
            |b, _| {
                b.iter(|| {
                    kept.clear();
                    apply_mask(black_box(&mut buf), [1, 2, 3, 4], 0);
                    kept.extend_from_slice(&buf);
                    black_box(&kept);
                })
            },
        );
        g.bench_with_input(BenchmarkId::new("extend_masked", size), &size, |b, _| {
            b.iter(|| {
                kept.clear();
                extend_masked(&mut kept, black_box(&buf), [1, 2, 3, 4], 0);
                black_box(&kept);
            })
        });
    }
    g.finish();
}

fn utf8_validation(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf8");
    for size in SIZES {
        let text: Vec<u8> = "sockwave κόσμε €1 ✓ "
            .repeat(size / 16 + 1)
            .into_bytes()
            .into_iter()
            .take(size)
            .collect();
        let cut = text
            .iter()
            .rposition(|b| *b < 0x80 || *b >= 0xC0)
            .unwrap_or(0);
        let text = text[..cut].to_vec();
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(BenchmarkId::new("whole", size), &text, |b, t| {
            b.iter(|| utf8::validate(black_box(t)))
        });
        g.bench_with_input(
            BenchmarkId::new("incremental_4k_pieces", size),
            &text,
            |b, t| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    let n = t.chunks(4096).count();
                    for (i, piece) in t.chunks(4096).enumerate() {
                        v.feed(piece, i + 1 == n).unwrap();
                    }
                })
            },
        );
    }
    g.finish();
}

fn frame_headers(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_header");
    let rules = DecodeRules {
        expect_masked: true,
        allow_rsv1: false,
    };
    for (name, len) in [("7bit", 20u64), ("16bit", 1024), ("64bit", 1 << 20)] {
        let head = EncodedHeader::new(OpCode::Binary, true, false, len, Some([1, 2, 3, 4]));
        let bytes = head.as_bytes().to_vec();
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| FrameHeader::decode(black_box(&bytes), rules).unwrap())
        });
        g.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| EncodedHeader::new(OpCode::Binary, true, false, black_box(len), None))
        });
    }
    g.finish();
}

/// Whole frames through the state machine: decode, unmask, validate, deliver.
fn frame_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_decode");
    let cfg = Arc::new(ProtocolConfig::default());
    for size in [20usize, 1024, 64 * 1024] {
        // 64 KiB worth of masked text frames of `size` bytes each.
        let count = (64 * 1024 / size).max(1);
        let mut stream = Vec::new();
        let payload = vec![b'a'; size];
        let mut client = Connection::client(cfg.clone(), Instant::now(), 1);
        for _ in 0..count {
            client
                .send(sockwave::protocol::MessageKind::Text, &payload, &mut stream)
                .unwrap();
        }
        let now = Instant::now();
        let mut server = open_server(&cfg, now);
        g.throughput(Throughput::Bytes(stream.len() as u64));
        g.bench_with_input(BenchmarkId::new("text", size), &stream, |b, stream| {
            let mut buf = stream.clone();
            let mut out = Vec::new();
            b.iter(|| {
                buf.copy_from_slice(stream);
                let mut pos = 0;
                let mut n = 0;
                while pos < buf.len() {
                    let r = server.read(&mut buf[pos..], now, &mut out);
                    pos += r.consumed;
                    n += r.event.is_some() as usize;
                }
                assert_eq!(n, count);
            })
        });
    }
    g.finish();
}

fn open_server(cfg: &Arc<ProtocolConfig>, now: Instant) -> Connection {
    let mut server = Connection::server(cfg.clone(), now);
    let mut req = REQUEST.to_vec();
    let mut out = Vec::new();
    let r = server.read(&mut req, now, &mut out);
    let Some(Event::Request(request)) = r.event else {
        panic!()
    };
    server
        .accept(&request, &AcceptOptions::default(), now, &mut out)
        .unwrap();
    server
}

const REQUEST: &[u8] = b"GET /chat?room=1 HTTP/1.1\r\nHost: server.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0\r\nAccept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\nCache-Control: no-cache\r\nPragma: no-cache\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nOrigin: http://example.com\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

fn handshake(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake");
    let limits = HandshakeLimits::default();
    g.throughput(Throughput::Bytes(REQUEST.len() as u64));
    g.bench_function("parse_validate", |b| {
        b.iter(|| {
            let (req, _) = Request::parse(black_box(REQUEST), &limits)
                .unwrap()
                .unwrap();
            req.validate_upgrade().unwrap();
        })
    });
    g.bench_function("accept_key", |b| {
        b.iter(|| accept_key(black_box(b"dGhlIHNhbXBsZSBub25jZQ==")))
    });
    g.finish();
}

/// permessage-deflate on 1 KiB JSON-like messages: compress and inflate, in
/// shared mode (no context) and dedicated mode (context kept between messages).
fn deflate(c: &mut Criterion) {
    use sockwave::protocol::deflate::{
        compress_stateless, inflate_stateless, Compressor, Decompressor,
    };
    let msgs: Vec<Vec<u8>> = (0..64)
        .map(|i| {
            let mut m = format!(
                r#"{{"seq":{i},"type":"book","symbol":"ACME-{i}","bids":[[101.{i},300],[101.1,900],[101.0,1200]],"asks":[[101.5,200],[101.6,750]],"trades":["#
            );
            while m.len() < 1000 {
                m.push_str(&format!(r#"{{"p":101.{},"q":{},"t":17000{i}}},"#, m.len() % 97, m.len() % 13));
            }
            m.truncate(1023);
            m.push(']');
            m.into_bytes()
        })
        .collect();
    let total: usize = msgs.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("deflate_1k_json");
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("compress_stateless_level1", |b| {
        let mut out = Vec::with_capacity(4096);
        b.iter(|| {
            for m in &msgs {
                out.clear();
                compress_stateless(black_box(m), 1, 15, 8, &mut out);
            }
        })
    });
    g.bench_function("compress_dedicated_level1", |b| {
        let mut comp = Compressor::new(1, 15, 8);
        let mut out = Vec::with_capacity(4096);
        b.iter(|| {
            for m in &msgs {
                out.clear();
                comp.compress(black_box(m), &mut out, false);
            }
        })
    });
    let shared: Vec<Vec<u8>> = msgs
        .iter()
        .map(|m| {
            let mut z = Vec::new();
            compress_stateless(m, 1, 15, 8, &mut z);
            z
        })
        .collect();
    let ratio = total as f64 / shared.iter().map(Vec::len).sum::<usize>() as f64;
    println!(
        "deflate_1k_json: {} messages, {total} bytes, shared-mode ratio {ratio:.2}",
        msgs.len()
    );
    g.bench_function("inflate_stateless", |b| {
        let mut out = Vec::with_capacity(4096);
        b.iter(|| {
            for z in &shared {
                out.clear();
                inflate_stateless(black_box(z), 1 << 20, &mut out).unwrap();
            }
        })
    });
    g.bench_function("inflate_dedicated", |b| {
        b.iter_batched(
            || {
                let mut comp = Compressor::new(1, 15, 8);
                let zs: Vec<Vec<u8>> = msgs
                    .iter()
                    .map(|m| {
                        let mut z = Vec::new();
                        comp.compress(m, &mut z, false);
                        z
                    })
                    .collect();
                (Decompressor::new(15), zs)
            },
            |(mut d, zs)| {
                let mut out = Vec::with_capacity(4096);
                for z in &zs {
                    out.clear();
                    d.inflate(z, 1 << 20, &mut out, false).unwrap();
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    masking,
    utf8_validation,
    frame_headers,
    frame_decode,
    handshake,
    deflate
);
criterion_main!(benches);
