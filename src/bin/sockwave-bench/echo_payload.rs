//! What an echo connection sends, and the check of what comes back, made
//! cheap enough that the load generator is not what a large-message cell
//! measures.
//!
//! Each connection once held its own pattern of the payload's size, copied
//! it into every frame, masked the copy and compared each echo with it. At
//! 64 KiB and 100 connections that is 6.4 MB of patterns read from memory
//! twice a message, and a profile of the generator put the copy, the mask
//! and the compare at over a quarter of its core, with the server idle a
//! quarter of the time waiting for it. Now all connections share one base
//! pattern (it stays in cache) and each connection's payload is that base
//! XOR its own 8-byte key, so every word still differs between connections
//! (a server that mixed them up is caught). A frame is the base copied and
//! then XORed once, key and mask together (as the mask alone was before);
//! an echo is checked in one pass. What changed is that both read a base in
//! cache rather than one of many patterns in memory.
//!
//! A payload is `seq` (8 bytes, little-endian) and then, from byte 8,
//! `base[i] ^ key[i % 8]`.

/// The payloads of one run's connections.
pub(crate) struct EchoPayloads {
    base: Vec<u8>,
}

impl EchoPayloads {
    /// Payloads of `len` bytes (at least 8).
    pub(crate) fn new(len: usize) -> EchoPayloads {
        assert!(len >= 8, "a payload holds its 8-byte sequence number");
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let base = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        EchoPayloads { base }
    }

    /// Connection `id`'s key: a different one for every id (multiplying by
    /// an odd number is one-to-one).
    pub(crate) fn key(id: u64) -> u64 {
        id.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// Appends message `seq` of the connection keyed `key`, masked with
    /// `mask` from phase 0 as a client frame's payload is.
    pub(crate) fn append_masked(&self, key: u64, seq: u64, mask: [u8; 4], out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&self.base);
        let mask_word = u64::from_le_bytes([
            mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
        ]);
        let payload = &mut out[at..];
        payload[..8].copy_from_slice(&(seq ^ mask_word).to_le_bytes());
        let flip = key ^ mask_word;
        let mut words = payload[8..].chunks_exact_mut(8);
        for w in &mut words {
            let v = u64::from_le_bytes(w.try_into().expect("8 bytes")) ^ flip;
            w.copy_from_slice(&v.to_le_bytes());
        }
        let flip = flip.to_le_bytes();
        for (i, b) in words.into_remainder().iter_mut().enumerate() {
            *b ^= flip[i];
        }
    }

    /// Whether `payload` is message `seq` of the connection keyed `key`,
    /// unmasked, every byte.
    pub(crate) fn is_intact(&self, key: u64, seq: u64, payload: &[u8]) -> bool {
        if payload.len() != self.base.len() || payload[..8] != seq.to_le_bytes() {
            return false;
        }
        let got = payload[8..].chunks_exact(8);
        let want = self.base[8..].chunks_exact(8);
        let (got_tail, want_tail) = (got.remainder(), want.remainder());
        // One OR over all differences, so the loop has no early exit and
        // compiles to vector instructions.
        let words = got.zip(want).fold(0u64, |diff, (g, w)| {
            let g = u64::from_le_bytes(g.try_into().expect("8 bytes"));
            let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            diff | (g ^ key ^ w)
        });
        let key = key.to_le_bytes();
        words == 0
            && got_tail
                .iter()
                .zip(want_tail)
                .enumerate()
                .all(|(i, (g, w))| g ^ key[i] == *w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockwave::protocol::mask::apply_mask;

    /// The plain definition, byte by byte.
    fn reference(base: &[u8], key: u64, seq: u64) -> Vec<u8> {
        let key = key.to_le_bytes();
        let mut p = seq.to_le_bytes().to_vec();
        p.extend(base[8..].iter().enumerate().map(|(i, b)| b ^ key[i % 8]));
        p
    }

    #[test]
    fn frames_unmask_to_the_definition_and_only_the_right_echo_is_intact() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in [8, 9, 15, 16, 17, 20, 1024, 1031, 65536] {
            let payloads = EchoPayloads::new(len);
            for id in [0, 1, 99] {
                let key = EchoPayloads::key(id);
                let mut out = vec![0xAA; 3];
                payloads.append_masked(key, 7 + id, mask, &mut out);
                assert_eq!(out[..3], [0xAA; 3], "appended, not overwritten");
                let mut payload = out[3..].to_vec();
                apply_mask(&mut payload, mask, 0);
                let want = reference(&payloads.base, key, 7 + id);
                assert_eq!(payload, want, "len {len}, id {id}");
                assert!(payloads.is_intact(key, 7 + id, &payload));
                assert!(!payloads.is_intact(key, 8 + id, &payload), "wrong seq");
                if len > 8 {
                    // (An 8-byte payload is its sequence number alone.)
                    let other = EchoPayloads::key(id + 1);
                    assert!(!payloads.is_intact(other, 7 + id, &payload), "other conn");
                }
                for at in [8, len / 2, len - 1] {
                    if at < 8 || at >= len {
                        continue;
                    }
                    let mut bad = payload.clone();
                    bad[at] ^= 0x40;
                    assert!(!payloads.is_intact(key, 7 + id, &bad), "byte {at}");
                }
                assert!(!payloads.is_intact(key, 7 + id, &payload[..len - 1]));
            }
        }
    }
}
