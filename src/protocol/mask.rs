//! Payload masking (RFC 6455 section 5.3).
//!
//! [`apply_mask`] is the fast path used everywhere; [`apply_mask_reference`] is the
//! obviously-correct bytewise version it is tested against.

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
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
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

#[inline(always)]
fn xor_word(lane: &mut [u8], word: u64) {
    let v = u64::from_ne_bytes(lane.try_into().expect("8-byte lane")) ^ word;
    lane.copy_from_slice(&v.to_ne_bytes());
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
}
