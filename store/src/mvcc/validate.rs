//! Checks a request before it is proposed, with etcd's errors, so a bad request never
//! reaches the log.

use skiff_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use skiff_proto::etcdserverpb::request_op::Request as OpRequest;
use skiff_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use crate::error::{Result, StoreError};
use crate::mvcc::key::KeyRange;

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

/// Validates a Range.
///
/// # Errors
/// [`StoreError::KeyNotProvided`], or `InvalidArgument` for unknown sort options.
pub fn range(r: &RangeRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(StoreError::KeyNotProvided);
    }
    if SortOrder::try_from(r.sort_order).is_err() {
        return Err(StoreError::InvalidArgument(
            "etcdserver: invalid sort option".into(),
        ));
    }
    if SortTarget::try_from(r.sort_target).is_err() {
        return Err(StoreError::InvalidArgument(
            "etcdserver: invalid sort option".into(),
        ));
    }
    Ok(())
}

/// Validates a Put.
///
/// # Errors
/// [`StoreError::KeyNotProvided`], [`StoreError::ValueProvided`], [`StoreError::LeaseProvided`].
pub fn put(r: &PutRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(StoreError::KeyNotProvided);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(StoreError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(StoreError::LeaseProvided);
    }
    Ok(())
}

/// Validates a DeleteRange.
///
/// # Errors
/// [`StoreError::KeyNotProvided`].
pub fn delete_range(r: &DeleteRangeRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(StoreError::KeyNotProvided);
    }
    Ok(())
}

/// Validates a Txn: every operation, the operation count, and that no key is written
/// twice in one branch (a put and a put, or a put inside a deleted range).
///
/// # Errors
/// [`StoreError::TooManyOps`], [`StoreError::DuplicateKey`], or the first invalid op's
/// error.
pub fn txn(r: &TxnRequest, max_ops: usize) -> Result<()> {
    if r.compare.len() > max_ops || r.success.len() > max_ops || r.failure.len() > max_ops {
        return Err(StoreError::TooManyOps);
    }
    for c in &r.compare {
        if c.key.is_empty() {
            return Err(StoreError::KeyNotProvided);
        }
    }
    for branch in [&r.success, &r.failure] {
        let mut puts = Vec::new();
        let mut dels = Vec::new();
        check_ops(branch, max_ops, &mut puts, &mut dels)?;
    }
    Ok(())
}

/// Checks a branch, collecting its writes; nested Txns contribute the writes of both
/// their branches (either may run).
fn check_ops(
    ops: &[RequestOp],
    max_ops: usize,
    puts: &mut Vec<Vec<u8>>,
    dels: &mut Vec<KeyRange>,
) -> Result<()> {
    for op in ops {
        match &op.request {
            Some(OpRequest::RequestRange(r)) => range(r)?,
            Some(OpRequest::RequestPut(p)) => {
                put(p)?;
                if puts.contains(&p.key) || dels.iter().any(|d| d.contains(&p.key)) {
                    return Err(StoreError::DuplicateKey);
                }
                puts.push(p.key.clone());
            }
            Some(OpRequest::RequestDeleteRange(d)) => {
                delete_range(d)?;
                let kr = KeyRange::from_request(&d.key, &d.range_end);
                if puts.iter().any(|p| kr.contains(p)) {
                    return Err(StoreError::DuplicateKey);
                }
                dels.push(kr);
            }
            Some(OpRequest::RequestTxn(t)) => {
                txn(t, max_ops)?;
                // Each nested branch is exclusive of the other, but both must not clash
                // with this branch's writes.
                let mut merged_puts = Vec::new();
                let mut merged_dels = Vec::new();
                for b in [&t.success, &t.failure] {
                    let mut p = puts.clone();
                    let mut d = dels.clone();
                    check_ops(b, max_ops, &mut p, &mut d)?;
                    merged_puts.extend(p.into_iter().skip(puts.len()));
                    merged_dels.extend(d.into_iter().skip(dels.len()));
                }
                puts.extend(merged_puts);
                dels.extend(merged_dels);
            }
            None => {
                return Err(StoreError::InvalidArgument(
                    "etcdserver: empty request op in txn".into(),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_op(k: &str) -> RequestOp {
        RequestOp {
            request: Some(OpRequest::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn del_op(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(OpRequest::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let t = TxnRequest {
            success: vec![put_op("a"), put_op("a")],
            ..Default::default()
        };
        assert_eq!(txn(&t, 128), Err(StoreError::DuplicateKey));
        let t = TxnRequest {
            success: vec![del_op("a", "c"), put_op("b")],
            ..Default::default()
        };
        assert_eq!(txn(&t, 128), Err(StoreError::DuplicateKey));
        let t = TxnRequest {
            success: vec![put_op("a")],
            failure: vec![put_op("a")],
            ..Default::default()
        };
        assert_eq!(txn(&t, 128), Ok(()), "success and failure are exclusive");
        let nested = TxnRequest {
            success: vec![put_op("a")],
            ..Default::default()
        };
        let t = TxnRequest {
            success: vec![
                put_op("a"),
                RequestOp {
                    request: Some(OpRequest::RequestTxn(nested)),
                },
            ],
            ..Default::default()
        };
        assert_eq!(txn(&t, 128), Err(StoreError::DuplicateKey));
    }

    #[test]
    fn limits_and_empty_keys() {
        let t = TxnRequest {
            success: (0..129).map(|i| put_op(&format!("k{i}"))).collect(),
            ..Default::default()
        };
        assert_eq!(txn(&t, 128), Err(StoreError::TooManyOps));
        assert_eq!(put(&PutRequest::default()), Err(StoreError::KeyNotProvided));
        let p = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(put(&p), Err(StoreError::ValueProvided));
        let r = RangeRequest {
            key: b"k".to_vec(),
            sort_order: 9,
            ..Default::default()
        };
        assert!(matches!(range(&r), Err(StoreError::InvalidArgument(_))));
    }
}
