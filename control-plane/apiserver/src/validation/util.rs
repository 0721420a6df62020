//! Small helpers for reading and defaulting objects held as `serde_json::Value`, and for
//! building the causes Kubernetes reports. Every reader tolerates any JSON shape: a field of
//! the wrong type reads as absent, so no input can make validation panic.

use serde_json::{Map, Value};

use crate::error::FieldCause;

/// The causes collected by one validation pass.
pub(crate) type Causes = Vec<FieldCause>;

/// `v[key]` as a string, if it is one.
pub(crate) fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// `v[key]` as a string, `""` when absent or not a string (Go's zero value).
pub(crate) fn se<'a>(v: &'a Value, key: &str) -> &'a str {
    s(v, key).unwrap_or("")
}

/// `v[key]` as an integer, if it is one.
pub(crate) fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

/// `v[key]` as a bool, `false` when absent (Go's zero value).
pub(crate) fn flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// `v[key]` as an array slice, empty when absent or not an array.
pub(crate) fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// `v[key]` as an object, if it is one.
pub(crate) fn obj<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    v.get(key).and_then(Value::as_object)
}

/// `v[key]` when present and not `null`.
pub(crate) fn present<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// A `map[string]string` field (labels, selectors, data) as sorted `(key, value)` pairs;
/// non-string values read as `""`.
pub(crate) fn string_map<'a>(v: &'a Value, key: &str) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<(&str, &str)> = obj(v, key)
        .map(|m| {
            m.iter()
                .map(|(k, x)| (k.as_str(), x.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

/// `v[key]` as a mutable object, created (`{}`) when absent or `null`. `None` when `v` is
/// not an object or `v[key]` holds something other than an object.
pub(crate) fn child<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let m = v.as_object_mut()?;
    let slot = m.entry(key.to_string()).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    if slot.is_object() {
        Some(slot)
    } else {
        None
    }
}

/// `v[key]` as a mutable object when it already is one.
pub(crate) fn child_if<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    v.get_mut(key).filter(|x| x.is_object())
}

/// The elements of the array `v[key]`, mutably (nothing when absent or not an array).
pub(crate) fn items_mut<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    v.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|a| a.iter_mut())
}

/// Whether `v[key]` is unset the way Go sees it: absent, `null`, `""`, or `0`.
pub(crate) fn is_unset(v: &Value, key: &str) -> bool {
    match v.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(x)) => x.is_empty(),
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// Sets `v[key] = value` when `v` is an object and `v[key]` is absent or `null`.
pub(crate) fn default_missing(v: &mut Value, key: &str, value: Value) {
    if let Some(m) = v.as_object_mut() {
        let slot = m.entry(key.to_string()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// Sets `v[key] = value` when `v` is an object and `v[key]` is unset in Go's sense
/// (absent, `null`, `""` or `0`): the defaulters test Go zero values.
pub(crate) fn default_zero(v: &mut Value, key: &str, value: Value) {
    if is_unset(v, key) {
        if let Some(m) = v.as_object_mut() {
            m.insert(key.to_string(), value);
        }
    }
}

/// `FieldValueNotFound`: `Not found: <value>`.
pub(crate) fn not_found(field: impl Into<String>, value: &Value) -> FieldCause {
    FieldCause {
        reason: "FieldValueNotFound",
        message: format!("Not found: {value}"),
        field: field.into(),
    }
}

/// `FieldValueTooMany`: `Too many: <n>: must have at most <max> items`.
pub(crate) fn too_many(field: impl Into<String>, n: usize, max: usize) -> FieldCause {
    FieldCause {
        reason: "FieldValueTooMany",
        message: format!("Too many: {n}: must have at most {max} items"),
        field: field.into(),
    }
}

/// `Invalid value: <rendered>: <detail>` where the value is rendered by the caller (Go's
/// `%#v` of a map, for instance).
pub(crate) fn invalid_rendered(
    field: impl Into<String>,
    rendered: &str,
    detail: &str,
) -> FieldCause {
    FieldCause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {rendered}: {detail}"),
        field: field.into(),
    }
}

/// A `map[string]string` rendered as Go's `%#v` does (`map[string]string{"a":"b"}`, keys
/// sorted), which is how Kubernetes prints label maps in messages.
pub(crate) fn go_string_map(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return "map[string]string(nil)".to_string();
    }
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{}", Value::from(*k), Value::from(*v)))
        .collect();
    format!("map[string]string{{{}}}", body.join(", "))
}

/// Appends each message as `Invalid value: <value>: <msg>` at `field`.
pub(crate) fn invalid_each(errs: &mut Causes, field: &str, value: &str, msgs: Vec<String>) {
    for m in msgs {
        errs.push(FieldCause::invalid(field, &Value::from(value), &m));
    }
}

/// `must be greater than or equal to 0` for a negative integer field.
pub(crate) fn nonnegative(errs: &mut Causes, v: &Value, key: &str, path: &str) {
    if let Some(n) = int(v, key) {
        if n < 0 {
            errs.push(FieldCause::invalid(
                format!("{path}.{key}"),
                &Value::from(n),
                IS_NEGATIVE,
            ));
        }
    }
}

/// Kubernetes's message for a negative value.
pub(crate) const IS_NEGATIVE: &str = "must be greater than or equal to 0";

/// Kubernetes's message for changing an immutable field.
pub(crate) const IMMUTABLE: &str = "field is immutable";
