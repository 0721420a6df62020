//! MVCC revisions.
//!
//! Every modifying request gets one *main* revision; the operations inside it (the puts
//! and deletes of one Txn) are numbered by *sub* revision 0, 1, 2… A key's version in the
//! store is identified by `(main, sub)`. Clients only see main revisions; sub only orders
//! the changes within one request (and so the events of one watch response).

use std::fmt;

/// A store revision: `main` is what clients see, `sub` orders the changes of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    /// The request's revision (≥ 1 for any stored change).
    pub main: i64,
    /// Position of the change within its request.
    pub sub: i64,
}

impl Revision {
    /// A revision with the given main and sub parts.
    pub const fn new(main: i64, sub: i64) -> Self {
        Self { main, sub }
    }

    /// The 16-byte ascending encoding used by the `rev` column family:
    /// `main: u64 BE ‖ sub: u64 BE`.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        b[8..].copy_from_slice(&(self.sub as u64).to_be_bytes());
        b
    }

    /// Decodes [`Revision::to_bytes`]. `None` on a slice that is not 16 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != 16 {
            return None;
        }
        let main = u64::from_be_bytes(b[..8].try_into().ok()?) as i64;
        let sub = u64::from_be_bytes(b[8..].try_into().ok()?) as i64;
        Some(Self { main, sub })
    }

    /// The 16-byte *descending* encoding used as the suffix of `kv` keys:
    /// `!main ‖ !sub`, so newer revisions sort first.
    pub fn to_desc_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&(!(self.main as u64)).to_be_bytes());
        b[8..].copy_from_slice(&(!(self.sub as u64)).to_be_bytes());
        b
    }

    /// Decodes [`Revision::to_desc_bytes`]. `None` on a slice that is not 16 bytes.
    pub fn from_desc_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != 16 {
            return None;
        }
        let main = !u64::from_be_bytes(b[..8].try_into().ok()?) as i64;
        let sub = !u64::from_be_bytes(b[8..].try_into().ok()?) as i64;
        Some(Self { main, sub })
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.main, self.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip_and_order() {
        let a = Revision::new(5, 0);
        let b = Revision::new(5, 2);
        let c = Revision::new(6, 0);
        for r in [a, b, c] {
            assert_eq!(Revision::from_bytes(&r.to_bytes()), Some(r));
            assert_eq!(Revision::from_desc_bytes(&r.to_desc_bytes()), Some(r));
        }
        assert!(a.to_bytes() < b.to_bytes() && b.to_bytes() < c.to_bytes());
        assert!(a.to_desc_bytes() > b.to_desc_bytes() && b.to_desc_bytes() > c.to_desc_bytes());
        assert_eq!(Revision::from_bytes(&[1, 2]), None);
    }
}
