//! Key ranges, and the order-preserving encoding of user keys in the `kv` column family,
//! where Skiff kept versions before the `rev` family held them (read only to move them).
//!
//! ```text
//! user key  "a\0b"     →  61 00 FF 62 00 01
//!                            └─┬─┘      └─┬─┘
//!                     escaped 0x00   terminator
//! ```
//! Escaping 0x00 as `00 FF` and terminating with `00 01` keeps byte order: for user keys
//! `a < b`, `memkey(a) ‖ x < memkey(b) ‖ y` for any suffixes `x`, `y`.

/// Encodes a user key for the `kv` family (without the revision suffix).
pub fn encode(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2 + 16);
    encode_into(key, &mut out);
    out
}

/// Appends the encoding of `key` to `out`.
pub fn encode_into(key: &[u8], out: &mut Vec<u8>) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// Splits a `kv` family key into (user key, the 16-byte revision suffix).
/// `None` when the key is not a valid encoding.
pub fn decode(enc: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    if enc.len() < 18 {
        return None;
    }
    let (body, suffix) = enc.split_at(enc.len() - 16);
    let mut key = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == 0 {
            match body.get(i + 1) {
                Some(0xFF) => {
                    key.push(0);
                    i += 2;
                }
                Some(0x01) if i + 2 == body.len() => return Some((key, suffix)),
                _ => return None,
            }
        } else {
            key.push(b);
            i += 1;
        }
    }
    None
}

/// A key range as the etcd API states it: `key` alone, `[key, range_end)`, or every key
/// `>= key` when `range_end` is `"\0"`. An empty `key` with `range_end = "\0"` is all keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    /// Inclusive start.
    pub start: Vec<u8>,
    /// Exclusive end; `None` = unbounded; `Some(start ‖ 0x00)`-like single-key ranges are
    /// represented by [`KeyRange::single`].
    pub end: Option<Vec<u8>>,
    /// True when the range is exactly one key.
    pub single: bool,
}

impl KeyRange {
    /// Builds a range from the etcd request fields.
    pub fn from_request(key: &[u8], range_end: &[u8]) -> Self {
        if range_end.is_empty() {
            Self::single(key)
        } else if range_end == [0] {
            Self {
                start: key.to_vec(),
                end: None,
                single: false,
            }
        } else {
            Self {
                start: key.to_vec(),
                end: Some(range_end.to_vec()),
                single: false,
            }
        }
    }

    /// The range holding only `key`.
    pub fn single(key: &[u8]) -> Self {
        Self {
            start: key.to_vec(),
            end: None,
            single: true,
        }
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        if self.single {
            return key == self.start.as_slice();
        }
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|e| key < e)
    }

    /// Whether the range can hold no key at all (`range_end <= key`).
    pub fn is_empty(&self) -> bool {
        !self.single
            && self
                .end
                .as_deref()
                .is_some_and(|e| e <= self.start.as_slice())
    }

    /// Whether two ranges share a key.
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        if self.is_empty() || other.is_empty() {
            return false;
        }
        if self.single {
            return other.contains(&self.start);
        }
        if other.single {
            return self.contains(&other.start);
        }
        let a_before_b_end = other
            .end
            .as_deref()
            .is_none_or(|e| self.start.as_slice() < e);
        let b_before_a_end = self
            .end
            .as_deref()
            .is_none_or(|e| other.start.as_slice() < e);
        a_before_b_end && b_before_a_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_preserves_order_with_prefixes_and_zero_bytes() {
        let keys: Vec<&[u8]> = vec![
            b"", b"\0", b"\0\0", b"\0\x01", b"a", b"a\0", b"a\0b", b"ab", b"b",
        ];
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        let suffix_hi = [0xFFu8; 16];
        let suffix_lo = [0u8; 16];
        for w in keys.windows(2) {
            let mut a = encode(w[0]);
            a.extend_from_slice(&suffix_hi);
            let mut b = encode(w[1]);
            b.extend_from_slice(&suffix_lo);
            assert!(a < b, "{:?} !< {:?}", w[0], w[1]);
        }
        for k in keys {
            let mut e = encode(k);
            e.extend_from_slice(&suffix_lo);
            let (d, s) = decode(&e).unwrap();
            assert_eq!(d, k);
            assert_eq!(s, &suffix_lo);
        }
    }

    #[test]
    fn decode_rejects_garbage() {
        assert_eq!(decode(b"short"), None);
        let mut e = vec![0x00, 0x05];
        e.extend_from_slice(&[0u8; 16]);
        assert_eq!(decode(&e), None);
    }

    #[test]
    fn ranges() {
        let r = KeyRange::from_request(b"a", b"c");
        assert!(r.contains(b"a") && r.contains(b"b\xff") && !r.contains(b"c"));
        let all = KeyRange::from_request(b"", b"\0");
        assert!(all.contains(b"") && all.contains(b"zzz"));
        let one = KeyRange::from_request(b"k", b"");
        assert!(one.contains(b"k") && !one.contains(b"k\0"));
        assert!(KeyRange::from_request(b"b", b"a").is_empty());
        assert!(!r.overlaps(&one) && r.overlaps(&KeyRange::single(b"b")));
        assert!(KeyRange::from_request(b"a", b"b").overlaps(&KeyRange::from_request(b"a\0", b"\0")));
        assert!(!KeyRange::from_request(b"a", b"b").overlaps(&KeyRange::from_request(b"b", b"c")));
    }
}
