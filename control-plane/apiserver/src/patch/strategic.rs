//! Strategic merge patch, applied server-side the way the Kubernetes API server applies it
//! (`StrategicMergeMapPatch` in k8s.io/apimachinery, with parallel lists merged and
//! unmatched nulls ignored).
//!
//! # Semantics
//! - Maps merge recursively; a `null` value deletes the key.
//! - Lists whose field has strategy `merge` merge: lists of objects element-wise by the
//!   field's merge key (new elements appended), lists of primitives as sets (union).
//!   All other lists, and fields the schema does not describe, are replaced.
//! - `$patch: replace` in a map replaces the map by the patch's; as an element of a merging
//!   list it replaces the whole list by the patch's other elements.
//! - `$patch: delete` in a map deletes the map (upstream leaves `{}` behind; removing the
//!   field is what the directive asks for and decodes the same for every optional field);
//!   as an element of a merging list it deletes the elements with that merge key.
//! - `$deleteFromPrimitiveList/<field>: [...]` removes those values from a primitive list.
//! - `$setElementOrder/<field>: [...]` orders the merged list: listed elements in the given
//!   order, elements the patch does not know (server-only) kept where they were relative to
//!   their old neighbours.
//! - `$retainKeys: [...]` clears every key of the original map that is not listed, then
//!   merges; every non-null key the patch sets must be listed.
//!
//! Values the patch introduces (a field the original lacks, a new list element, a replaced
//! value) are "merged into nothing": their nulls are dropped and their directives applied, so
//! no `$patch`/`$setElementOrder` key is ever stored.
//!
//! Order within a merged list follows upstream exactly: elements named in the patch come in
//! the patch's order; elements only on the server keep their relative order and are placed
//! before a patch element only if they preceded it in the original list.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value};

use super::meta::{field_patch_meta, FieldPatchMeta};
use super::schema::Shape;
use crate::error::ApiError;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

/// Applies the strategic merge `patch` (already parsed) to `original`, both objects of the
/// type `root` describes.
pub fn apply(original: &Value, patch: Value, root: Shape) -> Result<Value, ApiError> {
    let Value::Object(patch) = patch else {
        return Err(ApiError::bad_request(format!(
            "invalid JSON document: a strategic merge patch must be a JSON object, not {}",
            type_name(&patch)
        )));
    };
    let Value::Object(original) = original else {
        return Err(ApiError::internal(
            "the object to patch is not a JSON object",
        ));
    };
    match merge_map(original.clone(), patch, root)? {
        Merged::Keep(map) => Ok(Value::Object(map)),
        Merged::Delete => Err(ApiError::bad_request(
            "a strategic merge patch cannot delete the whole object with \"$patch\": \"delete\"; use DELETE",
        )),
    }
}

/// The outcome of merging into a map: the merged map, or the map's own deletion
/// (`$patch: delete`).
enum Merged {
    Keep(Map<String, Value>),
    Delete,
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

/// 422, as upstream answers patches that are well-formed but cannot apply to the schema.
fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::new(422, "Invalid", message)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// The patch metadata of `field` in the object `shape` describes.
fn meta_of(shape: Shape, field: &str) -> Option<FieldPatchMeta> {
    shape.definition().and_then(|d| field_patch_meta(d, field))
}

/// Merges `patch` into `original`, the map `shape` describes.
fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    shape: Shape,
) -> Result<Merged, ApiError> {
    if let Some(directive) = patch.remove(DIRECTIVE) {
        return match directive.as_str() {
            // The patch's content is the new map, with its own directives applied.
            Some("replace") => merge_map(Map::new(), patch, shape),
            Some("delete") => Ok(Merged::Delete),
            _ => Err(bad_request(format!(
                "unknown patch type: {directive} in map: {}",
                Value::Object(patch)
            ))),
        };
    }

    if let Some(retain) = patch.remove(RETAIN_KEYS) {
        retain_keys(&mut original, &patch, &retain)?;
    }

    // Directives naming a list field are applied after the fields themselves are merged.
    // Keyed by field: a map may carry many directives, and each field looks its own up.
    let mut orders: BTreeMap<String, Value> = BTreeMap::new();
    let mut deletions: Vec<(String, Value)> = Vec::new();
    let mut fields: Vec<(String, Value)> = Vec::new();
    for (key, value) in patch {
        if key.starts_with(SET_ELEMENT_ORDER) {
            let field = directive_field(&key, SET_ELEMENT_ORDER).ok_or_else(|| {
                bad_request(format!(
                    "invalid patch format of setElementOrder list: {key:?} names no field"
                ))
            })?;
            orders.insert(field, value);
        } else if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            let field = directive_field(&key, DELETE_FROM_PRIMITIVE_LIST).ok_or_else(|| {
                bad_request(format!(
                    "invalid patch format of primitive list: {key:?} names no field"
                ))
            })?;
            deletions.push((field, value));
        } else {
            fields.push((key, value));
        }
    }

    for (key, value) in fields {
        match orders.remove(&key) {
            Some(order) => {
                let meta = meta_of(shape, &key);
                check_patch_order(&value, &order, meta)?;
                let before = original.get(&key).cloned();
                merge_field(&mut original, key.clone(), value, shape)?;
                set_element_order(&mut original, &key, &order, before.as_ref(), meta)?;
            }
            None => merge_field(&mut original, key, value, shape)?,
        }
    }
    // Orders of lists the patch leaves as they are: only the order changes.
    for (key, order) in orders {
        let before = original.get(&key).cloned();
        set_element_order(
            &mut original,
            &key,
            &order,
            before.as_ref(),
            meta_of(shape, &key),
        )?;
    }
    for (key, values) in deletions {
        delete_from_primitive_list(&mut original, &key, &values)?;
    }
    Ok(Merged::Keep(original))
}

/// `$setElementOrder/containers` → `containers`; `None` without a field name.
fn directive_field(key: &str, prefix: &str) -> Option<String> {
    let field = key.strip_prefix(prefix)?.strip_prefix('/')?;
    (!field.is_empty()).then(|| field.to_string())
}

/// Applies a `$retainKeys` directive to `original` before the patch is merged into it.
fn retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    retain: &Value,
) -> Result<(), ApiError> {
    let Some(list) = retain.as_array() else {
        return Err(bad_request(format!(
            "invalid patch format of retainKeys: $retainKeys must be a list, not {}",
            type_name(retain)
        )));
    };
    let retained: HashSet<&str> = list.iter().filter_map(Value::as_str).collect();
    // A patch that sets a field its own $retainKeys would clear contradicts itself.
    for (key, value) in patch {
        if value.is_null()
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || key.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !retained.contains(&key.as_str()) {
            return Err(bad_request(format!(
                "invalid patch format of retainKeys: the patch sets {key:?}, which $retainKeys {} does not list",
                retain
            )));
        }
    }
    original.retain(|key, _| retained.contains(&key.as_str()));
    Ok(())
}

/// Merges the patch's `value` for `key` into `original`.
fn merge_field(
    original: &mut Map<String, Value>,
    key: String,
    value: Value,
    shape: Shape,
) -> Result<(), ApiError> {
    if value.is_null() {
        original.remove(&key);
        return Ok(());
    }
    let child = shape.field(&key);
    let meta = meta_of(shape, &key);
    let merged = match original.remove(&key) {
        Some(existing) => merge_value(existing, value, child, meta)?,
        None => fresh(value, child, meta)?,
    };
    if let Some(merged) = merged {
        original.insert(key, merged);
    }
    Ok(())
}

/// Merges a patch value into an existing value; `None` when the value is deleted.
fn merge_value(
    existing: Value,
    patch: Value,
    shape: Shape,
    meta: Option<FieldPatchMeta>,
) -> Result<Option<Value>, ApiError> {
    if meta.is_some_and(|m| m.replaces()) {
        return fresh(patch, shape, meta);
    }
    match (existing, patch) {
        (Value::Object(existing), Value::Object(patch)) => {
            Ok(match merge_map(existing, patch, shape)? {
                Merged::Keep(map) => Some(Value::Object(map)),
                Merged::Delete => None,
            })
        }
        (Value::Array(existing), Value::Array(patch)) if meta.is_some_and(|m| m.merges_lists()) => {
            let key = meta.and_then(|m| m.merge_key);
            Ok(Some(Value::Array(merge_list(
                existing,
                patch,
                shape.items(),
                key,
            )?)))
        }
        // Scalars, lists that are replaced, and values whose type the patch changes.
        (_, patch) => fresh(patch, shape, meta),
    }
}

/// A value the patch introduces, merged into nothing: nulls dropped, directives applied.
/// `None` when nothing is left (`null`, or a map that deletes itself).
fn fresh(
    value: Value,
    shape: Shape,
    meta: Option<FieldPatchMeta>,
) -> Result<Option<Value>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::Object(patch) => Ok(match merge_map(Map::new(), patch, shape)? {
            Merged::Keep(map) => Some(Value::Object(map)),
            Merged::Delete => None,
        }),
        Value::Array(items) if meta.is_some_and(|m| m.merges_lists()) => {
            let key = meta.and_then(|m| m.merge_key);
            Ok(Some(Value::Array(merge_list(
                Vec::new(),
                items,
                shape.items(),
                key,
            )?)))
        }
        Value::Array(items) => {
            // A replaced list keeps its elements as given, only cleaned of nulls in maps and
            // of directives.
            let item_shape = shape.items();
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::Object(_) | Value::Array(_) => {
                        if let Some(item) = fresh(item, item_shape, None)? {
                            out.push(item);
                        }
                    }
                    other => out.push(other),
                }
            }
            Ok(Some(Value::Array(out)))
        }
        scalar => Ok(Some(scalar)),
    }
}

/// The identity of a value as a string, equal for two values exactly when they are the
/// same JSON value. Numbers compare by value, so whole numbers are written as integers:
/// `80` and `80.0` are one port (upstream, which compares Go's `int64` and `float64`
/// apart, would append a second port 80 instead).
fn id_string(value: &Value) -> String {
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                // Whole floats inside the i64 range print as the integer they equal.
                if f.fract() == 0.0 && f.abs() < 9.0e18 {
                    (f as i64).to_string()
                } else {
                    f.to_string()
                }
            }
        }
        other => other.to_string(),
    }
}

/// The identity of a list element: its merge key's value, or the element itself in a list
/// of primitives; `None` for an element that lacks the merge key.
fn identity(item: &Value, key: Option<&str>) -> Option<String> {
    match key {
        Some(key) => item.get(key).map(id_string),
        None => Some(id_string(item)),
    }
}

/// The index of the first element of a list with each identity. Hashing keeps merges
/// linear in the size of the lists, whatever a patch holds.
struct Positions(HashMap<String, usize>);

impl Positions {
    fn of(list: &[Value], key: Option<&str>) -> Positions {
        let mut map = HashMap::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            if let Some(id) = identity(item, key) {
                map.entry(id).or_insert(i);
            }
        }
        Positions(map)
    }

    fn get(&self, item: &Value, key: Option<&str>) -> Option<usize> {
        identity(item, key).and_then(|id| self.0.get(&id).copied())
    }
}

/// Merges the patch's elements into a list with strategy `merge`.
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    items: Shape,
    key: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    if original.iter().chain(&patch).any(Value::is_array) {
        return Err(unprocessable("lists of lists are not supported"));
    }
    match key {
        Some(key) => merge_keyed_list(original, patch, items, key),
        None => merge_primitive_list(original, patch),
    }
}

/// A list of primitives with strategy `merge`: a set union.
fn merge_primitive_list(original: Vec<Value>, patch: Vec<Value>) -> Result<Vec<Value>, ApiError> {
    if let Some(map) = original.iter().chain(&patch).find(|v| v.is_object()) {
        return Err(bad_request(format!(
            "cannot merge lists without merge key: the list of primitives contains the map {map}"
        )));
    }
    let mut seen = HashSet::with_capacity(original.len() + patch.len());
    let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
    for value in original.iter().chain(&patch) {
        if seen.insert(id_string(value)) {
            merged.push(value.clone());
        }
    }
    Ok(order_like_patch(merged, &patch, &original, None))
}

/// A list of objects merged by `key`.
fn merge_keyed_list(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    items: Shape,
    key: &str,
) -> Result<Vec<Value>, ApiError> {
    for item in original.iter().chain(&patch) {
        if !item.is_object() {
            return Err(bad_request(format!(
                "expected a map, but received {} ({item}) in a list merged by {key:?}",
                type_name(item)
            )));
        }
    }

    // Directive elements first: deletions by key, and `$patch: replace` of the whole list.
    let mut replace = false;
    let mut deleted = HashSet::new();
    let mut plain = Vec::with_capacity(patch.len());
    for item in patch {
        match item.get(DIRECTIVE) {
            None => plain.push(item),
            Some(directive) => match directive.as_str() {
                Some("delete") => match item.get(key) {
                    Some(id) => {
                        deleted.insert(id_string(id));
                    }
                    None => return Err(no_merge_key(&item, key)),
                },
                Some("replace") => replace = true,
                Some("merge") => {
                    return Err(bad_request(
                        "merging lists cannot yet be specified in the patch",
                    ))
                }
                _ => {
                    return Err(bad_request(format!(
                        "unknown patch type: {directive} in map: {item}"
                    )))
                }
            },
        }
    }
    if replace {
        let mut out = Vec::with_capacity(plain.len());
        for item in plain {
            if let Some(item) = fresh(item, items, None)? {
                out.push(item);
            }
        }
        return Ok(out);
    }
    if !deleted.is_empty() {
        // Every element with a deleted key goes, duplicates included.
        original.retain(|o| !identity(o, Some(key)).is_some_and(|id| deleted.contains(&id)));
    }

    let mut merged = original.clone();
    let mut positions = Positions::of(&merged, Some(key));
    for item in &plain {
        let Some(id) = identity(item, Some(key)) else {
            return Err(no_merge_key(item, key));
        };
        let Value::Object(patch_map) = item.clone() else {
            continue; // every element was checked to be a map above
        };
        match positions.0.get(&id).copied() {
            Some(i) => {
                let Value::Object(existing) = std::mem::take(&mut merged[i]) else {
                    continue; // checked above
                };
                merged[i] = match merge_map(existing, patch_map, items)? {
                    Merged::Keep(map) => Value::Object(map),
                    // Cannot happen (directive elements were taken out above), but an
                    // element must not vanish from under the position index.
                    Merged::Delete => Value::Object(Map::new()),
                };
            }
            None => {
                if let Merged::Keep(map) = merge_map(Map::new(), patch_map, items)? {
                    positions.0.insert(id, merged.len());
                    merged.push(Value::Object(map));
                }
            }
        }
    }
    Ok(order_like_patch(merged, &plain, &original, Some(key)))
}

fn no_merge_key(item: &Value, key: &str) -> ApiError {
    bad_request(format!(
        "map: {item} does not contain declared merge key: {key}"
    ))
}

/// Orders a merged list: the elements the `patch` names first sorted in its order, then the
/// others (the server-only ones) interleaved back where they stood in `original`.
fn order_like_patch(
    merged: Vec<Value>,
    patch: &[Value],
    original: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let in_patch = Positions::of(patch, key);
    let (named, server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|item| in_patch.get(item, key).is_some());
    let mut named: Vec<(usize, Value)> = named
        .into_iter()
        .map(|item| (in_patch.get(&item, key).unwrap_or(usize::MAX), item))
        .collect();
    // Stable: duplicates of one key keep their order.
    named.sort_by_key(|(i, _)| *i);
    let named = named.into_iter().map(|(_, item)| item).collect();
    interleave(server_only, named, &Positions::of(original, key), key)
}

/// Merges two ordered lists into one keeping each one's order: a server-only element goes
/// before the next named element only when both appear in the original list and it came
/// first there (upstream's `mergeSortedSlice`).
fn interleave(
    server_only: Vec<Value>,
    named: Vec<Value>,
    original: &Positions,
    key: Option<&str>,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(server_only.len() + named.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = named.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (original.get(l, key), original.get(r, key)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

/// Checks that the non-directive elements of a patch list appear in its
/// `$setElementOrder` list, in the same relative order.
fn check_patch_order(
    patch: &Value,
    order: &Value,
    meta: Option<FieldPatchMeta>,
) -> Result<(), ApiError> {
    let (Some(patch), Some(order)) = (patch.as_array(), order.as_array()) else {
        // A list field patched with a non-list replaces it; the order list is then checked
        // (and rejected if malformed) when it is applied.
        return Ok(());
    };
    let key = meta.and_then(|m| m.merge_key);
    let mut expected = order.iter();
    for item in patch {
        if item.get(DIRECTIVE).is_some() {
            continue;
        }
        let Some(id) = identity(item, key) else {
            continue; // reported as a missing merge key by the merge itself
        };
        if !expected.any(|o| identity(o, key).is_some_and(|v| v == id)) {
            return Err(bad_request(format!(
                "the order in patch list {} doesn't match $setElementOrder list {}",
                Value::Array(patch.clone()),
                Value::Array(order.clone())
            )));
        }
    }
    Ok(())
}

/// Applies `$setElementOrder/<key>` to the merged list `original[key]`; `before` is the list
/// as it was before the merge, whose order places the server-only elements.
fn set_element_order(
    original: &mut Map<String, Value>,
    key: &str,
    order: &Value,
    before: Option<&Value>,
    meta: Option<FieldPatchMeta>,
) -> Result<(), ApiError> {
    let Some(order) = order.as_array() else {
        return Err(bad_request(format!(
            "invalid patch format of setElementOrder list: $setElementOrder/{key} must be a list, not {}",
            type_name(order)
        )));
    };
    // Only lists that merge have an order to keep; a replaced list is in the patch's order.
    let Some(meta) = meta.filter(FieldPatchMeta::merges_lists) else {
        return Ok(());
    };
    let merge_key = meta.merge_key;
    if let Some(merge_key) = merge_key {
        if let Some(bad) = order.iter().find(|o| o.get(merge_key).is_none()) {
            return Err(no_merge_key(bad, merge_key));
        }
    }
    let Some(Value::Array(list)) = original.get_mut(key) else {
        return Ok(());
    };
    let before: &[Value] = before.and_then(Value::as_array).map_or(&[], Vec::as_slice);
    let merged = std::mem::take(list);
    *list = order_like_patch(merged, order, before, merge_key);
    Ok(())
}

/// Applies `$deleteFromPrimitiveList/<key>`: removes the listed values from the list.
fn delete_from_primitive_list(
    original: &mut Map<String, Value>,
    key: &str,
    values: &Value,
) -> Result<(), ApiError> {
    let Some(values) = values.as_array() else {
        return Err(bad_request(format!(
            "invalid patch format of primitive list: $deleteFromPrimitiveList/{key} must be a list, not {}",
            type_name(values)
        )));
    };
    if let Some(Value::Array(list)) = original.get_mut(key) {
        let doomed: HashSet<String> = values.iter().map(id_string).collect();
        list.retain(|item| !doomed.contains(&id_string(item)));
    }
    Ok(())
}
