//! Payload masking (RFC 6455 section 5.3).
//!
//! [`apply_mask`] is the fast path used everywhere; [`apply_mask_reference`] is the
//! obviously-correct bytewise version it is tested against. [`extend_masked`]
//! unmasks while it copies, for a reader that keeps the payload anyway: one
//! pass over the bytes instead of an unmask in place and then a copy.

use std::mem::MaybeUninit;

/// XORs `buf` with the 4-byte `key`, starting at byte `phase` of the key
/// (`phase` is the number of payload bytes already unmasked, modulo 4), and
/// returns the phase for the bytes that follow `buf`.
///
/// Streaming a frame's payload in pieces is then just a sequence of calls that
/// thread the returned phase through.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    if buf.len() >= WIDE_MIN && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just now.
        return unsafe { apply_mask_avx2(buf, key, phase) };
    }
    apply_mask_words(buf, key, phase)
}

/// Payloads from this length are masked 32 bytes per instruction where the
/// CPU has AVX2. The portable build's baseline is SSE2 (16 bytes). The check
/// of the CPU (a load of std's cached answer) made 128 bytes 8% slower
/// (criterion `mask/fast`, +0.25 ns), more than the wider xors saved it.
#[cfg(target_arch = "x86_64")]
const WIDE_MIN: usize = 256;

/// [`apply_mask_words`] compiled for AVX2: LLVM makes each 32-byte lane a
/// `vpxor`. Criterion `mask/fast` against the SSE2 build: 1 KiB −21%,
/// 16 KiB −66%, 1 MiB −53%. An echoed 1 KiB message's unmasking took 310
/// instructions before (callgrind).
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn apply_mask_avx2(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    apply_mask_words(buf, key, phase)
}

/// [`apply_mask`] for any CPU.
#[inline(always)]
fn apply_mask_words(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    let next_phase = (phase + buf.len()) & 3;
    let key = rotate_key(key, phase);
    let word = key_word(key);
    // Four words per step: LLVM turns this into SIMD xors on x86_64 and
    // aarch64. The words are read and written unaligned, which costs those
    // targets nothing; a short message (20 bytes: two words and a half) is
    // then words, not bytes. Slices are stepped through by hand: the
    // iterators' setup cost a short message more than its xors did.
    let mut rest = buf;
    while rest.len() >= 32 {
        let (block, tail) = rest.split_at_mut(32);
        for lane in block.chunks_exact_mut(8) {
            xor_word(lane, word);
        }
        rest = tail;
    }
    while rest.len() >= 8 {
        let (lane, tail) = rest.split_at_mut(8);
        xor_word(lane, word);
        rest = tail;
    }
    // Every byte before the tail (0-7 bytes) was a whole number of keys: the
    // tail starts at the key's first byte, as the word does.
    if rest.len() >= 4 {
        let (half, tail) = rest.split_at_mut(4);
        let v = u32::from_ne_bytes(half.try_into().expect("4 bytes")) ^ u32::from_ne_bytes(key);
        half.copy_from_slice(&v.to_ne_bytes());
        rest = tail;
    }
    for (b, k) in rest.iter_mut().zip(key) {
        *b ^= k;
    }
    next_phase
}

/// The key twice over, as one word in memory order. From the key as a
/// `u32`, not byte by byte: LLVM assembled the eight bytes one at a time
/// (21 instructions per message, callgrind).
#[inline(always)]
fn key_word(key: [u8; 4]) -> u64 {
    let half = u64::from(u32::from_ne_bytes(key));
    half | half << 32
}

#[inline(always)]
fn xor_word(lane: &mut [u8], word: u64) {
    let v = u64::from_ne_bytes(lane.try_into().expect("8-byte lane")) ^ word;
    lane.copy_from_slice(&v.to_ne_bytes());
}

/// Appends `src` XORed with `key` (from byte `phase` of the key) to `dst`,
/// and returns the phase for the bytes that follow `src`: what
/// `dst.extend_from_slice(src)` and then [`apply_mask`] on the new bytes
/// would leave, in one pass over them.
#[inline]
pub fn extend_masked(dst: &mut Vec<u8>, src: &[u8], key: [u8; 4], phase: usize) -> usize {
    if src.len() < COPY_THEN_MASK_BELOW {
        let at = dst.len();
        dst.extend_from_slice(src);
        return apply_mask(&mut dst[at..], key, phase);
    }
    dst.reserve(src.len());
    let spare = &mut dst.spare_capacity_mut()[..src.len()];
    #[cfg(target_arch = "x86_64")]
    let next = if src.len() >= WIDE_MIN && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just now.
        unsafe { copy_masked_avx2(src, spare, key, phase) }
    } else {
        copy_masked_words(src, spare, key, phase)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let next = copy_masked_words(src, spare, key, phase);
    // SAFETY: `copy_masked_words` wrote every one of the `src.len()` bytes
    // after the vector's length (it walks `src` and `spare`, of that
    // length, to their ends), within the capacity reserved above.
    unsafe { dst.set_len(dst.len() + src.len()) };
    next
}

/// Shorter payloads are copied and then unmasked in place: both passes
/// stay in a cache line or two, and the copy is a few instructions. One
/// pass took more (an echoed 20-byte message: 101 instructions against 79,
/// callgrind), its slices' splitting costing more than the bytes.
const COPY_THEN_MASK_BELOW: usize = 64;

/// [`copy_masked_words`] compiled for AVX2 (see [`apply_mask_avx2`]).
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn copy_masked_avx2(
    src: &[u8],
    dst: &mut [MaybeUninit<u8>],
    key: [u8; 4],
    phase: usize,
) -> usize {
    copy_masked_words(src, dst, key, phase)
}

/// Writes `src` XORed with the key into all of `dst` (of the same length),
/// word by word as [`apply_mask_words`] does.
#[inline(always)]
fn copy_masked_words(src: &[u8], dst: &mut [MaybeUninit<u8>], key: [u8; 4], phase: usize) -> usize {
    debug_assert_eq!(src.len(), dst.len());
    let next_phase = (phase + src.len()) & 3;
    let key = rotate_key(key, phase);
    let word = key_word(key);
    let (mut from, mut to) = (src, dst);
    while from.len() >= 32 {
        let (block, from_tail) = from.split_at(32);
        let (out, to_tail) = to.split_at_mut(32);
        for (lane, out) in block.chunks_exact(8).zip(out.chunks_exact_mut(8)) {
            copy_word(lane, out, word);
        }
        (from, to) = (from_tail, to_tail);
    }
    while from.len() >= 8 {
        let (lane, from_tail) = from.split_at(8);
        let (out, to_tail) = to.split_at_mut(8);
        copy_word(lane, out, word);
        (from, to) = (from_tail, to_tail);
    }
    // The tail (0-7 bytes) starts at the key's first byte, as the word does.
    if from.len() >= 4 {
        let (half, from_tail) = from.split_at(4);
        let (out, to_tail) = to.split_at_mut(4);
        let v = u32::from_ne_bytes(half.try_into().expect("4 bytes")) ^ u32::from_ne_bytes(key);
        for (out, b) in out.iter_mut().zip(v.to_ne_bytes()) {
            out.write(b);
        }
        (from, to) = (from_tail, to_tail);
    }
    for (i, (out, &b)) in to.iter_mut().zip(from).enumerate() {
        out.write(b ^ key[i & 3]);
    }
    next_phase
}

#[inline(always)]
fn copy_word(lane: &[u8], out: &mut [MaybeUninit<u8>], word: u64) {
    let v = u64::from_ne_bytes(lane.try_into().expect("8-byte lane")) ^ word;
    assert!(out.len() >= 8);
    // SAFETY: `out` holds at least 8 bytes (checked above; the callers'
    // lanes are exactly 8, so the check folds away), and an unaligned
    // write needs no alignment. Byte by byte, LLVM left the stores scalar:
    // 1 KiB took 33 ns against 15 ns for an unmask in place and a copy.
    unsafe { out.as_mut_ptr().cast::<u64>().write_unaligned(v) };
}

/// The bytewise reference for [`apply_mask`]: same contract, no tricks.
#[doc(hidden)] // for tests, fuzzing and benches; not part of the supported API
pub fn apply_mask_reference(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(phase + i) % 4];
    }
    (phase + buf.len()) % 4
}

/// The key as seen from byte `by` of it: rotated left by `by % 4` bytes
/// (as one word: a slice rotation of four bytes is a loop of its own).
#[inline]
fn rotate_key(key: [u8; 4], by: usize) -> [u8; 4] {
    // In little-endian order the first byte is the lowest: moving bytes
    // towards the front is a right rotation of the word.
    u32::from_le_bytes(key)
        .rotate_right((by as u32 & 3) * 8)
        .to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + 7) as u8).collect()
    }

    #[test]
    fn rfc_example_masked_hello() {
        // RFC 6455 section 5.7: "Hello" masked with 37 fa 21 3d.
        let mut data = *b"Hello";
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn fast_path_equals_reference_for_every_length_alignment_and_phase() {
        let key = [0xa1, 0x02, 0xf3, 0x44];
        let backing = pattern(320 + 16);
        // Past WIDE_MIN too, where an AVX2 CPU takes the wide path.
        for len in 0..=320 {
            for align in 0..16 {
                for phase in 0..4 {
                    let mut fast = backing.clone();
                    let mut slow = backing.clone();
                    let p1 = apply_mask(&mut fast[align..align + len], key, phase);
                    let p2 = apply_mask_reference(&mut slow[align..align + len], key, phase);
                    assert_eq!(fast, slow, "len {len} align {align} phase {phase}");
                    assert_eq!(p1, p2);
                }
            }
        }
    }

    #[test]
    fn fast_path_equals_reference_on_large_buffers_in_pieces() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let data = pattern(1 << 20 | 13);
        let mut slow = data.clone();
        apply_mask_reference(&mut slow, key, 0);
        // Unmask in uneven pieces, threading the phase, as a streamed frame does.
        let mut fast = data.clone();
        let mut phase = 0;
        let mut at = 0;
        for piece in [1usize, 7, 4096, 3, 65_535, 100_000].iter().cycle() {
            if at == fast.len() {
                break;
            }
            let end = (at + piece).min(fast.len());
            phase = apply_mask(&mut fast[at..end], key, phase);
            at = end;
        }
        assert_eq!(fast, slow);
        // Masking twice is the identity.
        apply_mask(&mut fast, key, 0);
        assert_eq!(fast, data);
    }

    #[test]
    fn extend_masked_equals_a_copy_then_the_reference() {
        let key = [0xa1, 0x02, 0xf3, 0x44];
        let backing = pattern(1108);
        // Every length around the word and block sizes and past WIDE_MIN,
        // every phase, after a prefix already in the vector.
        for len in (0..=320).chain([1023, 1024, 1025, 1099]) {
            for align in [0, 1, 7] {
                for phase in 0..4 {
                    let src = &backing[align..align + len];
                    let mut fast = b"prefix".to_vec();
                    let p1 = extend_masked(&mut fast, src, key, phase);
                    let mut slow = b"prefix".to_vec();
                    slow.extend_from_slice(src);
                    let p2 = apply_mask_reference(&mut slow[6..], key, phase);
                    assert_eq!(fast, slow, "len {len} align {align} phase {phase}");
                    assert_eq!(p1, p2);
                }
            }
        }
    }
}
