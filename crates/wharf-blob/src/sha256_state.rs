//! A SHA-256 whose running state can be saved and restored.
//!
//! An upload's digest is computed while its chunks arrive. Keeping that running
//! hash only in one process's memory means that a PATCH landing on another
//! process, or after a restart, has to re-read and re-hash every byte before
//! it. The `sha2` 0.10 hasher that the workspace uses has no serialisable state
//! (that arrives with `digest` 0.11's `SerializableState`), so this module
//! keeps the state itself on top of the raw compression function
//! `sha2::compress256`: the eight state words, the number of bytes hashed and
//! the tail of fewer than 64 bytes that do not fill a block yet.

use sha2::digest::generic_array::GenericArray;
use wharf_core::Digest;

const BLOCK: usize = 64;
/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const INITIAL_STATE: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];
/// Leads every saved state, so a state of another format is never misread.
const MAGIC: &[u8; 8] = b"WHSHA256";
/// Bytes of the check value that ends a saved state.
const CHECK_LEN: usize = 16;
/// magic, length, eight words, tail, check.
const SAVED_LEN: usize = 8 + 8 + 32 + BLOCK + CHECK_LEN;

/// A running SHA-256 that can be saved between chunks and resumed elsewhere.
#[derive(Clone)]
pub(crate) struct ResumableSha256 {
    state: [u32; 8],
    /// Bytes hashed so far, including the tail.
    len: u64,
    /// The bytes that do not fill a block yet: `len % 64` of them are valid.
    tail: [u8; BLOCK],
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        ResumableSha256 {
            state: INITIAL_STATE,
            len: 0,
            tail: [0; BLOCK],
        }
    }
}

impl ResumableSha256 {
    /// Bytes hashed so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    fn tail_len(&self) -> usize {
        (self.len % BLOCK as u64) as usize
    }

    pub(crate) fn update(&mut self, mut data: &[u8]) {
        let filled = self.tail_len();
        self.len += data.len() as u64;
        if filled > 0 {
            let take = (BLOCK - filled).min(data.len());
            self.tail[filled..filled + take].copy_from_slice(&data[..take]);
            data = &data[take..];
            if filled + take < BLOCK {
                return;
            }
            let block = self.tail;
            compress(&mut self.state, &block);
        }
        let mut blocks = data.chunks_exact(BLOCK);
        for block in &mut blocks {
            compress(&mut self.state, block);
        }
        let rest = blocks.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
    }

    pub(crate) fn finish(&self) -> Digest {
        let mut hex = String::with_capacity(64);
        for word in self.final_words() {
            hex.push_str(&format!("{word:08x}"));
        }
        Digest::parse(&format!("sha256:{hex}")).expect("64 hex digits form a sha256 digest")
    }

    /// The hash value as eight words: the state after padding.
    fn final_words(&self) -> [u32; 8] {
        let mut state = self.state;
        let filled = self.tail_len();
        let mut last = [0u8; 2 * BLOCK];
        last[..filled].copy_from_slice(&self.tail[..filled]);
        last[filled] = 0x80;
        // The bit length must fit after the 0x80 in the same block, or a second.
        let end = if filled < BLOCK - 8 { BLOCK } else { 2 * BLOCK };
        last[end - 8..end].copy_from_slice(&(self.len.wrapping_mul(8)).to_be_bytes());
        for block in last[..end].chunks_exact(BLOCK) {
            compress(&mut state, block);
        }
        state
    }

    /// The state as bytes, bound to `key` (the upload id): a state saved for
    /// one upload never passes for another's.
    pub(crate) fn save(&self, key: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(SAVED_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.len.to_be_bytes());
        for word in self.state {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(&self.tail);
        let check = check_value(key, &out);
        out.extend_from_slice(&check);
        out
    }

    /// Restores a state saved by [`save`](Self::save) for `key`; `None` for
    /// anything torn, of another format, or saved for another key.
    pub(crate) fn restore(key: &str, saved: &[u8]) -> Option<ResumableSha256> {
        if saved.len() != SAVED_LEN || &saved[..8] != MAGIC {
            return None;
        }
        let (body, check) = saved.split_at(SAVED_LEN - CHECK_LEN);
        if check_value(key, body) != check {
            return None;
        }
        let len = u64::from_be_bytes(body[8..16].try_into().ok()?);
        let mut state = [0u32; 8];
        for (word, bytes) in state.iter_mut().zip(body[16..48].chunks_exact(4)) {
            *word = u32::from_be_bytes(bytes.try_into().ok()?);
        }
        let mut tail = [0u8; BLOCK];
        tail.copy_from_slice(&body[48..48 + BLOCK]);
        Some(ResumableSha256 { state, len, tail })
    }
}

fn compress(state: &mut [u32; 8], block: &[u8]) {
    sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
}

/// A SHA-256 over the key and the saved fields, truncated: it catches torn or
/// bit-flipped states and states of other uploads. It is not a defence against
/// someone who can write the staging area (they could change the bytes too).
fn check_value(key: &str, body: &[u8]) -> [u8; CHECK_LEN] {
    let mut hasher = ResumableSha256::default();
    hasher.update(&(key.len() as u64).to_be_bytes());
    hasher.update(key.as_bytes());
    hasher.update(body);
    let mut out = [0u8; CHECK_LEN];
    for (bytes, word) in out.chunks_exact_mut(4).zip(hasher.final_words()) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn matches_sha2_at_every_split_and_length() {
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 1000, 4099] {
            let data = pattern(len);
            let expected = Digest::sha256_of(&data);
            for split in [0, 1, 31, 63, 64, 65, len / 2, len] {
                let split = split.min(len);
                let mut hasher = ResumableSha256::default();
                hasher.update(&data[..split]);
                let saved = hasher.save("u");
                let mut resumed = ResumableSha256::restore("u", &saved).unwrap();
                resumed.update(&data[split..]);
                assert_eq!(resumed.len(), len as u64);
                assert_eq!(resumed.finish(), expected, "len {len} split {split}");
            }
        }
    }

    #[test]
    fn torn_foreign_or_flipped_states_are_refused() {
        let mut hasher = ResumableSha256::default();
        hasher.update(&pattern(100));
        let saved = hasher.save("a");
        assert!(ResumableSha256::restore("a", &saved).is_some());
        assert!(ResumableSha256::restore("b", &saved).is_none());
        assert!(ResumableSha256::restore("a", &saved[..saved.len() - 1]).is_none());
        assert!(ResumableSha256::restore("a", b"").is_none());
        for i in [0, 9, 20, 60, SAVED_LEN - 1] {
            let mut flipped = saved.clone();
            flipped[i] ^= 1;
            assert!(
                ResumableSha256::restore("a", &flipped).is_none(),
                "byte {i}"
            );
        }
    }
}
