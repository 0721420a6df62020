//! The value stored for each key version in the `rev` column family: the key, then
//! its record.
//!
//! ```text
//! version    u32 BE key length ‖ key ‖ record
//! record:
//! byte 0     flags: 0 = put, 1 = tombstone (a delete)
//! 1..9       create_revision  i64 BE   (0 for a tombstone)
//! 9..17      version          i64 BE   (0 for a tombstone)
//! 17..25     lease            i64 BE
//! 25..       value bytes
//! ```

use crate::mvcc::Revision;
use skiff_proto::mvccpb::KeyValue;

const HEADER: usize = 25;

/// One version of a key as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvRecord {
    /// A delete marker rather than a value.
    pub tombstone: bool,
    /// Revision of the put that created this generation of the key.
    pub create_revision: i64,
    /// Number of puts in this generation, this one included.
    pub version: i64,
    /// Attached lease, 0 = none.
    pub lease: i64,
    /// The value.
    pub value: Vec<u8>,
}

impl KvRecord {
    /// Serialises the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER + self.value.len());
        self.encode_into(&mut b);
        b
    }

    fn encode_into(&self, b: &mut Vec<u8>) {
        b.push(u8::from(self.tombstone));
        b.extend_from_slice(&self.create_revision.to_be_bytes());
        b.extend_from_slice(&self.version.to_be_bytes());
        b.extend_from_slice(&self.lease.to_be_bytes());
        b.extend_from_slice(&self.value);
    }

    /// Parses a record without copying its value (left empty); `None` if the bytes are
    /// not a record.
    pub fn decode_without_value(b: &[u8]) -> Option<Self> {
        Self::decode(b.get(..HEADER)?)
    }

    /// Parses a record; `None` if the bytes are not one.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < HEADER || b[0] > 1 {
            return None;
        }
        let i = |r: std::ops::Range<usize>| i64::from_be_bytes(b[r].try_into().unwrap_or([0; 8]));
        Some(Self {
            tombstone: b[0] == 1,
            create_revision: i(1..9),
            version: i(9..17),
            lease: i(17..25),
            value: b[HEADER..].to_vec(),
        })
    }

    /// The record as an etcd `KeyValue` for `key` modified at `rev`.
    pub fn to_kv(&self, key: Vec<u8>, rev: Revision) -> KeyValue {
        KeyValue {
            key,
            create_revision: self.create_revision,
            mod_revision: rev.main,
            version: self.version,
            value: self.value.clone(),
            lease: self.lease,
        }
    }
}

/// Serialises a stored version: `key` and its record.
pub fn encode_version(key: &[u8], rec: &KvRecord) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + key.len() + HEADER + rec.value.len());
    // etcd's key size limit (1.5 MiB of request) keeps every key far below 4 GiB.
    b.extend_from_slice(&(key.len() as u32).to_be_bytes());
    b.extend_from_slice(key);
    rec.encode_into(&mut b);
    b
}

/// Splits a stored version into its key and its (still encoded) record; `None` if the
/// bytes are not a version.
pub fn split_version(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let key = b.get(4..4usize.checked_add(len)?)?;
    Some((key, &b[4 + len..]))
}

/// Parses a stored version into its key and record; `None` if the bytes are not one.
pub fn decode_version(b: &[u8]) -> Option<(&[u8], KvRecord)> {
    let (key, rec) = split_version(b)?;
    Some((key, KvRecord::decode(rec)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r = KvRecord {
            tombstone: false,
            create_revision: 3,
            version: 2,
            lease: 7,
            value: b"v".to_vec(),
        };
        assert_eq!(KvRecord::decode(&r.encode()), Some(r.clone()));
        assert_eq!(KvRecord::decode(&[9; 30]), None);
        assert_eq!(KvRecord::decode(&[0; 3]), None);
        let v = encode_version(b"k\0ey", &r);
        assert_eq!(decode_version(&v), Some((&b"k\0ey"[..], r.clone())));
        let (k, rec) = split_version(&v).unwrap();
        let meta = KvRecord::decode_without_value(rec).unwrap();
        assert_eq!((k, meta.lease, meta.value.len()), (&b"k\0ey"[..], 7, 0));
        assert_eq!(split_version(&[0, 0, 0, 9, 1]), None);
        assert_eq!(decode_version(&v[..v.len() - 2]), None);
    }
}
