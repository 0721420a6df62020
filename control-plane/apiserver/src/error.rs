//! API errors as Kubernetes reports them: an HTTP status and a `meta/v1 Status` body.
//!
//! Clients match on `reason` (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`,
//! `Expired`, …) and on the HTTP code, so both follow the Kubernetes API conventions;
//! `message` is written for people, in the words kubectl users already know.

use serde_json::{json, Value};

/// Why one field of an object is invalid: one entry of `details.causes` in a 422 Invalid
/// `Status`. `reason` is one of Kubernetes's cause types (`FieldValueRequired`,
/// `FieldValueInvalid`, `FieldValueNotSupported`, `FieldValueDuplicate`,
/// `FieldValueForbidden`, `FieldValueTooLong`, `FieldValueTypeInvalid`);
/// `field` is the JSON path as Kubernetes spells it (`spec.template.spec.containers[0].image`,
/// `metadata.labels`); `message` is the whole human text of the cause, such as
/// `Required value` or `Invalid value: "Foo": a lowercase RFC 1123 label must consist of …`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldCause {
    pub reason: &'static str,
    pub message: String,
    pub field: String,
}

impl FieldCause {
    /// `Required value` (with an optional explanation appended after a colon).
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        FieldCause {
            reason: "FieldValueRequired",
            message,
            field: field.into(),
        }
    }

    /// `Invalid value: <value>: <detail>`; `value` is rendered as JSON, as Kubernetes
    /// renders strings and numbers (`"Foo"`, `-1`).
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        FieldCause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {}: {detail}", render_value(value)),
            field: field.into(),
        }
    }

    /// `Unsupported value: "X": supported values: "A", "B"`.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        FieldCause {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {}: supported values: {}",
                render_value(value),
                list.join(", ")
            ),
            field: field.into(),
        }
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        FieldCause {
            reason: "FieldValueDuplicate",
            message: format!("Duplicate value: {}", render_value(value)),
            field: field.into(),
        }
    }

    /// `Forbidden: <detail>`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        FieldCause {
            reason: "FieldValueForbidden",
            message: format!("Forbidden: {detail}"),
            field: field.into(),
        }
    }

    /// `Too long: may not be more than <max> bytes`.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        FieldCause {
            reason: "FieldValueTooLong",
            message: format!("Too long: may not be more than {max} bytes"),
            field: field.into(),
        }
    }

    /// The line kubectl prints for the cause: `<field>: <message>`.
    pub fn line(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

fn render_value(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// An error of the API, rendered as a `Status` with the HTTP code it carries.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// HTTP status code (also `Status.code`).
    pub code: u16,
    /// `Status.reason`: `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `BadRequest`,
    /// `Expired`, `Gone`, `MethodNotAllowed`, `NotAcceptable`, `UnsupportedMediaType`,
    /// `Timeout`, `ServiceUnavailable`, `InternalError`, `Forbidden`, `RequestEntityTooLarge`.
    pub reason: &'static str,
    pub message: String,
    /// `Status.details`, boxed: errors travel in every `Result` of the API and most have
    /// few details.
    pub details: Box<Details>,
}

/// `Status.details`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Details {
    /// `details.name`, `details.group`, `details.kind` (the resource, e.g. `pods`).
    pub name: Option<String>,
    pub group: Option<String>,
    pub kind: Option<String>,
    pub causes: Vec<FieldCause>,
    /// `details.retryAfterSeconds`, for 429/503/504.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: Box::default(),
        }
    }

    /// Attaches `details` (name, group, resource) to the error.
    pub fn with_details(mut self, group: &str, resource: &str, name: &str) -> Self {
        if !group.is_empty() {
            self.details.group = Some(group.to_string());
        }
        self.details.kind = Some(resource.to_string());
        if !name.is_empty() {
            self.details.name = Some(name.to_string());
        }
        self
    }

    /// `<resource>[.<group>] "<name>"`, the way Kubernetes names an object in messages.
    fn qualified(group: &str, resource: &str) -> String {
        if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        }
    }

    /// 404: `pods "web" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", Self::qualified(group, resource)),
        )
        .with_details(group, resource, name)
    }

    /// 409: `pods "web" already exists`.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        ApiError::new(
            409,
            "AlreadyExists",
            format!(
                "{} \"{name}\" already exists",
                Self::qualified(group, resource)
            ),
        )
        .with_details(group, resource, name)
    }

    /// 409: the optimistic-concurrency failure of an update with a stale resourceVersion.
    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                Self::qualified(group, resource)
            ),
        )
        .with_details(group, resource, name)
    }

    /// 422: `Deployment.apps "web" is invalid: [cause, cause]`, with the causes listed in
    /// `details.causes`. `kind` is the object's Kind (`Deployment`), as Kubernetes writes it.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<FieldCause>) -> Self {
        let what = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let lines: Vec<String> = causes.iter().map(FieldCause::line).collect();
        let body = if lines.len() == 1 {
            lines[0].clone()
        } else {
            format!("[{}]", lines.join(", "))
        };
        let mut e = ApiError::new(
            422,
            "Invalid",
            format!("{what} \"{name}\" is invalid: {body}"),
        );
        if !group.is_empty() {
            e.details.group = Some(group.to_string());
        }
        e.details.kind = Some(kind.to_string());
        e.details.name = Some(name.to_string());
        e.details.causes = causes;
        e
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    /// 410 Expired: a resourceVersion or continue token older than what is kept.
    pub fn expired(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// 503 ServiceUnavailable (the store cannot be reached), with a retry hint.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = ApiError::new(503, "ServiceUnavailable", message);
        e.details.retry_after = Some(1);
        e
    }

    /// 504 Timeout: the outcome of a write is unknown.
    pub fn timeout(message: impl Into<String>) -> Self {
        let mut e = ApiError::new(504, "Timeout", message);
        e.details.retry_after = Some(1);
        e
    }

    /// The `Status` body.
    pub fn status(&self) -> Value {
        let mut details = serde_json::Map::new();
        if let Some(n) = &self.details.name {
            details.insert("name".into(), json!(n));
        }
        if let Some(g) = &self.details.group {
            details.insert("group".into(), json!(g));
        }
        if let Some(k) = &self.details.kind {
            details.insert("kind".into(), json!(k));
        }
        if !self.details.causes.is_empty() {
            let causes: Vec<Value> = self
                .details
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if let Some(r) = self.details.retry_after {
            details.insert("retryAfterSeconds".into(), json!(r));
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Results of the API.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_lists_causes_like_kubernetes() {
        let e = ApiError::invalid(
            "apps",
            "Deployment",
            "web",
            vec![
                FieldCause::required("spec.selector", ""),
                FieldCause::invalid("metadata.name", &json!("Web"), "must be lowercase"),
            ],
        );
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "Deployment.apps \"web\" is invalid: [spec.selector: Required value, metadata.name: Invalid value: \"Web\": must be lowercase]"
        );
        let s = e.status();
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueRequired");
        assert_eq!(s["details"]["causes"][1]["field"], "metadata.name");
        assert_eq!(s["reason"], "Invalid");
    }

    #[test]
    fn not_found_names_resource_and_group() {
        let e = ApiError::not_found("apps", "deployments", "web");
        assert_eq!(e.message, "deployments.apps \"web\" not found");
        let s = e.status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["details"]["kind"], "deployments");
        assert_eq!(
            ApiError::not_found("", "pods", "p").message,
            "pods \"p\" not found"
        );
    }
}
