//! JSON merge patch, JSON patch and strategic merge patch: the three `PATCH` content types
//! Kubernetes serves, so that `kubectl apply` (client-side, a three-way strategic merge
//! patch), `kubectl patch`, `kubectl scale`, `kubectl label`/`annotate` and `kubectl edit`
//! work against this server.
//!
//! Objects are `serde_json::Value`s in their Kubernetes JSON form. [`apply`] only computes
//! the patched object; the caller then validates it (defaulting, immutable fields, name and
//! namespace) and writes it with the original's resourceVersion as precondition, as for an
//! update.
//!
//! - [`PatchType::Json`] (RFC 6902) and [`PatchType::Merge`] (RFC 7386) need no schema.
//! - [`PatchType::StrategicMerge`] needs each field's patch strategy and merge key: the
//!   table [`FIELD_PATCH_META`] (also read by the OpenAPI document, through
//!   [`field_patch_meta`]), applied to the nested types found by following k8s-openapi's
//!   JSON schemas down from the root kind ([`root_definition`]).

mod meta;
mod schema;
mod strategic;
#[cfg(test)]
mod tests;

use serde_json::Value;

use crate::error::ApiError;

pub use meta::{field_patch_meta, FieldPatchMeta, FieldPatchMetaEntry, FIELD_PATCH_META};
pub use schema::root_definition;

/// Upstream's cap on the operations of one JSON patch (`maxJSONPatchOperations`): beyond it
/// the request is refused as too large rather than applied.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The `PATCH` content types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatchType {
    /// `application/json-patch+json`: RFC 6902 operations.
    Json,
    /// `application/merge-patch+json`: RFC 7386 merge patch.
    Merge,
    /// `application/strategic-merge-patch+json`: Kubernetes strategic merge patch.
    StrategicMerge,
}

impl PatchType {
    /// The patch type of a `Content-Type` header value; parameters (`; charset=utf-8`),
    /// surrounding whitespace and letter case are ignored. `None` for any other media type
    /// (the caller answers 415 UnsupportedMediaType).
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let media = ct.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/json-patch+json") {
            Some(PatchType::Json)
        } else if media.eq_ignore_ascii_case("application/merge-patch+json") {
            Some(PatchType::Merge)
        } else if media.eq_ignore_ascii_case("application/strategic-merge-patch+json") {
            Some(PatchType::StrategicMerge)
        } else {
            None
        }
    }

    /// The media type, as the `Content-Type` a client sends and discovery advertises.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
        }
    }
}

/// Whether a strategic merge patch can be applied to objects of `group`/`kind`: the kinds
/// this server serves and `autoscaling/Scale`. Others only accept JSON and merge patches.
pub fn supports_strategic_merge(group: &str, kind: &str) -> bool {
    root_definition(group, kind).is_some()
}

/// Applies `patch` (the raw request body) to `original` and returns the patched object;
/// `original` is not modified. `group`/`kind` select the strategic merge schema
/// (`("apps", "Deployment")`, `("", "Pod")`, `("autoscaling", "Scale")`) and are ignored by
/// the other two types.
///
/// Errors, as Kubernetes reports them:
/// - 400 BadRequest: a body that is not valid JSON or not a patch of its type, malformed
///   strategic merge directives, a merge-keyed element without its key;
/// - 413 RequestEntityTooLarge: a JSON patch of more than [`MAX_JSON_PATCH_OPERATIONS`];
/// - 415 UnsupportedMediaType: a strategic merge patch for a kind without a schema;
/// - 422 Invalid: a JSON patch operation that does not apply (a failed `test`, a missing
///   path), a list of lists in a strategic merge patch.
pub fn apply(
    patch_type: PatchType,
    group: &str,
    kind: &str,
    original: &Value,
    patch: &[u8],
) -> Result<Value, ApiError> {
    match patch_type {
        PatchType::Json => apply_json_patch(original, patch),
        PatchType::Merge => apply_merge_patch(original, patch),
        PatchType::StrategicMerge => {
            let Some(root) = schema::Shape::root(group, kind) else {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - strategic merge patch is not supported for {} - accepted media types include: application/json-patch+json, application/merge-patch+json",
                        if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") }
                    ),
                ));
            };
            strategic::apply(original, parse_body(patch)?, root)
        }
    }
}

/// Parses a patch body as JSON; 400 with the parser's complaint otherwise.
fn parse_body(patch: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(patch)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

/// RFC 6902. The operations are applied in order, all or nothing.
fn apply_json_patch(original: &Value, patch: &[u8]) -> Result<Value, ApiError> {
    let body = parse_body(patch)?;
    if !body.is_array() {
        return Err(ApiError::bad_request(
            "error decoding patch: a JSON patch must be a list of operations",
        ));
    }
    let operations: json_patch::Patch = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if operations.0.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!(
                "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
                operations.0.len()
            ),
        ));
    }
    // The operations apply to a copy that is dropped on failure, so the crate's own undo
    // (`json_patch::patch`) is unnecessary.
    let mut doc = original.clone();
    json_patch::patch_unsafe(&mut doc, &operations.0).map_err(|e| {
        // Upstream answers 422 for any operation that does not apply, a failed `test`
        // included; the message says which operation and why.
        let op = operations
            .0
            .get(e.operation)
            .map_or("", |op| match op {
                json_patch::PatchOperation::Add(_) => "add",
                json_patch::PatchOperation::Remove(_) => "remove",
                json_patch::PatchOperation::Replace(_) => "replace",
                json_patch::PatchOperation::Move(_) => "move",
                json_patch::PatchOperation::Copy(_) => "copy",
                json_patch::PatchOperation::Test(_) => "test",
            });
        let why = match e.kind {
            json_patch::PatchErrorKind::TestFailed => "the value there does not match".to_string(),
            json_patch::PatchErrorKind::InvalidPointer => {
                "the path does not exist in the object".to_string()
            }
            json_patch::PatchErrorKind::InvalidFromPointer => {
                "the \"from\" path does not exist in the object".to_string()
            }
            ref other => other.to_string(),
        };
        ApiError::new(
            422,
            "Invalid",
            format!(
                "the server rejected our request due to an error in our request: json patch {op} operation {} on path \"{}\" failed: {why}",
                e.operation, e.path
            ),
        )
    })?;
    Ok(doc)
}

/// RFC 7386: maps merge recursively, `null` deletes, anything else replaces.
fn apply_merge_patch(original: &Value, patch: &[u8]) -> Result<Value, ApiError> {
    let patch = parse_body(patch)?;
    // RFC 7386 would let a non-object replace the whole document; an object can only be
    // patched into another object, so upstream refuses it as a bad patch.
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "error decoding patch: a merge patch must be a JSON object",
        ));
    }
    let mut doc = original.clone();
    json_patch::merge(&mut doc, &patch);
    Ok(doc)
}
