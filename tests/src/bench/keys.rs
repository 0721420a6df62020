//! Keys and values of fixed size. A key is a short prefix and a zero-padded decimal index,
//! so byte order is index order and a contiguous index range is a contiguous key range:
//!
//! ```text
//! KeySpace::new("k/", 10, 1000):  key(7) = b"k/00000007"   key(999) = b"k/00000999"
//! ```

use anyhow::{ensure, Result};

/// `size` keys of exactly `key_size` bytes: `prefix` then a zero-padded index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpace {
    prefix: Vec<u8>,
    width: usize,
    size: u64,
}

impl KeySpace {
    /// A key space of `size` keys of `key_size` bytes under `prefix`.
    ///
    /// # Errors
    /// When `size` is 0, or `key_size` leaves too few bytes after `prefix` for the
    /// largest index.
    pub fn new(prefix: &str, key_size: usize, size: u64) -> Result<Self> {
        ensure!(size > 0, "the key space must hold at least one key");
        let digits = (size - 1).to_string().len();
        ensure!(
            key_size >= prefix.len() + digits,
            "key size {key_size} is too small for {size} keys under prefix {prefix:?} \
             (needs at least {})",
            prefix.len() + digits
        );
        Ok(Self {
            prefix: prefix.as_bytes().to_vec(),
            width: key_size - prefix.len(),
            size,
        })
    }

    /// Number of keys.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The common prefix of every key.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Key number `i % size`.
    pub fn key(&self, i: u64) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(format!("{:0w$}", i % self.size, w = self.width).as_bytes());
        k
    }
}

pub use skiff_proto::prefix_end;

/// A value of `size` bytes: `head` then filler, cut to `size` if `head` is longer.
pub fn value(size: usize, head: &[u8]) -> Vec<u8> {
    let mut v = head.to_vec();
    v.resize(size, b'.');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_fixed_size_and_sort_by_index() {
        let ks = KeySpace::new("k/", 10, 1000).unwrap();
        assert_eq!(ks.key(7), b"k/00000007");
        assert_eq!(ks.key(999), b"k/00000999");
        assert_eq!(ks.key(1007), ks.key(7), "wraps around");
        assert!(ks.key(9) < ks.key(10));
        assert!((0..1000).all(|i| ks.key(i).len() == 10));
    }

    #[test]
    fn too_small_key_size_is_an_error() {
        assert!(KeySpace::new("k/", 4, 1000).is_err());
        assert!(KeySpace::new("k/", 5, 1000).is_ok());
        assert!(KeySpace::new("k/", 10, 0).is_err());
        assert!(KeySpace::new("", 1, 10).is_ok());
    }

    #[test]
    fn prefix_end_like_etcd() {
        assert_eq!(prefix_end(b"w/"), b"w0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn values_have_the_asked_size() {
        assert_eq!(value(5, b"ab"), b"ab...");
        assert_eq!(value(1, b"abc"), b"a");
        assert_eq!(value(0, b""), b"");
    }
}
