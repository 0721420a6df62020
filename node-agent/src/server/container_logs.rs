//! `GET /containerLogs/{ns}/{pod}/{container}`: a container's log as `kubectl logs`
//! prints it.
//!
//! Query parameters (the kubelet's, as the API server passes them on): `follow`,
//! `previous`, `timestamps` (booleans), `tailLines` (≥ 0), `sinceSeconds` (≥ 1) or
//! `sinceTime` (RFC 3339), `limitBytes` (≥ 1). Others are ignored.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;

use super::{HttpError, Shared};
use crate::logs::{self, LogOptions};

/// What a `containerLogs` request asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogRequest {
    pub previous: bool,
    pub options: LogOptions,
}

fn boolean(key: &str, v: &str) -> Result<bool, HttpError> {
    match v {
        "" | "true" | "1" | "True" | "TRUE" => Ok(true),
        "false" | "0" | "False" | "FALSE" => Ok(false),
        _ => Err(HttpError::bad_request(format!(
            "invalid value {v:?} for {key}: expected true or false"
        ))),
    }
}

fn integer(key: &str, v: &str, min: i64) -> Result<u64, HttpError> {
    let n: i64 = v.parse().map_err(|_| {
        HttpError::bad_request(format!("invalid value {v:?} for {key}: not an integer"))
    })?;
    if n < min {
        return Err(HttpError::bad_request(format!(
            "invalid value {n} for {key}: must be greater than or equal to {min}"
        )));
    }
    Ok(n as u64)
}

/// Parses the query string of a `containerLogs` request; `now` resolves `sinceSeconds`.
///
/// # Errors
/// 400 for a malformed or out-of-range parameter, or both `sinceSeconds` and
/// `sinceTime`.
pub fn parse_query(query: &str, now: jiff::Timestamp) -> Result<LogRequest, HttpError> {
    let mut r = LogRequest::default();
    let mut since_seconds = None;
    let mut since_time = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "follow" => r.options.follow = boolean(&k, &v)?,
            "previous" => r.previous = boolean(&k, &v)?,
            "timestamps" => r.options.timestamps = boolean(&k, &v)?,
            "tailLines" => r.options.tail_lines = Some(integer(&k, &v, 0)?),
            "limitBytes" => r.options.limit_bytes = Some(integer(&k, &v, 1)?),
            "sinceSeconds" => since_seconds = Some(integer(&k, &v, 1)?),
            "sinceTime" => {
                let t: jiff::Timestamp = v.parse().map_err(|e| {
                    HttpError::bad_request(format!(
                        "invalid value {v:?} for sinceTime: not an RFC 3339 time ({e})"
                    ))
                })?;
                since_time = Some(t);
            }
            _ => {}
        }
    }
    r.options.since = match (since_seconds, since_time) {
        (Some(_), Some(_)) => {
            return Err(HttpError::bad_request(
                "at most one of sinceTime or sinceSeconds may be specified",
            ))
        }
        (Some(s), None) => {
            let secs = i64::try_from(s).unwrap_or(i64::MAX);
            Some(
                now.checked_sub(jiff::SignedDuration::from_secs(secs))
                    .unwrap_or(jiff::Timestamp::MIN),
            )
        }
        (None, t) => t,
    };
    Ok(r)
}

/// The handler.
pub async fn handle(
    State(shared): State<Shared>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, HttpError> {
    let req = parse_query(query.as_deref().unwrap_or(""), jiff::Timestamp::now())?;
    let log = shared
        .lookup
        .container_log(&ns, &pod, &container, req.previous)?;
    let permit = shared
        .log_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            HttpError::unavailable(format!(
                "this node agent already serves {} log streams; try again later",
                super::MAX_LOG_STREAMS
            ))
        })?;
    let mut options = req.options;
    options.follow &= log.running;
    let exited = if log.running { log.exited } else { None };
    let stream = logs::log_stream(log.path, options, exited, shared.shutdown.clone());
    // The permit is released when the body (and so the stream) is dropped.
    let stream = futures::StreamExt::map(stream, move |chunk| {
        let _held = &permit;
        chunk
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2024-05-01T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn parses_the_kubelet_parameters() {
        let r = parse_query(
            "follow=true&previous=false&timestamps=1&tailLines=10&limitBytes=500&sinceSeconds=60&x=y",
            now(),
        )
        .unwrap();
        assert!(r.options.follow && r.options.timestamps && !r.previous);
        assert_eq!(r.options.tail_lines, Some(10));
        assert_eq!(r.options.limit_bytes, Some(500));
        assert_eq!(
            r.options.since,
            Some("2024-05-01T09:59:00Z".parse().unwrap())
        );
        let r = parse_query("sinceTime=2024-05-01T09%3A00%3A00Z&previous", now()).unwrap();
        assert!(r.previous);
        assert_eq!(
            r.options.since,
            Some("2024-05-01T09:00:00Z".parse().unwrap())
        );
        assert_eq!(parse_query("", now()).unwrap(), LogRequest::default());
    }

    #[test]
    fn refuses_bad_values_with_a_reason() {
        for (q, want) in [
            ("follow=maybe", "invalid value \"maybe\" for follow"),
            ("tailLines=-1", "must be greater than or equal to 0"),
            ("tailLines=ten", "not an integer"),
            ("limitBytes=0", "must be greater than or equal to 1"),
            ("sinceSeconds=0", "must be greater than or equal to 1"),
            ("sinceTime=yesterday", "not an RFC 3339 time"),
            (
                "sinceSeconds=5&sinceTime=2024-05-01T09:00:00Z",
                "at most one of",
            ),
        ] {
            let e = parse_query(q, now()).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(want), "{q}: {}", e.message);
        }
        // Absurd but valid: since the beginning of time.
        let r = parse_query("sinceSeconds=99999999999999", now()).unwrap();
        assert_eq!(r.options.since, Some(jiff::Timestamp::MIN));
    }
}
