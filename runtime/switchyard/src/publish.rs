//! Publishing from outside: `POST /_switchyard/send` and
//! `POST /_switchyard/group-send`, behind the admin token (see
//! [`crate::admin`]), so another service can do what Django's
//! `async_to_sync(channel_layer.group_send)(...)` does.
//!
//! The body is `{"channel": NAME, "event": EVENT}` or
//! `{"group": NAME, "event": EVENT}`; the event is a JSON object with a
//! string `"type"`, checked by the same rules as a plugin's `group-send`
//! ([`Event`]). Answers, each with a JSON body:
//!
//! | status | when |
//! |---|---|
//! | 202 | the layer took the event (`send`: `{"sent": true}`; `group-send`: `{"delivered", "over_capacity"}` as the layer reports them) |
//! | 400 | the body is not JSON, or not an object with the name and the event; the name breaks Channels' rules; the event is not an object, has no string `type`, or is too large (`error` names the rule) |
//! | 401 / 404 | a missing or wrong token / no `admin.token` configured |
//! | 429 | `send` to a channel at capacity (Channels' `ChannelFull`), with `Retry-After` |
//! | 503 | the layer cannot reach its backend, with `Retry-After` |

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde_json::{Map, Value, json};
use switchyard_layer::event::MAX_EVENT_BYTES;
use switchyard_layer::{Event, LayerError};

use crate::admin;
use crate::server::AppState;

/// The path of the channel send.
pub(crate) const SEND_PATH: &str = "/_switchyard/send";
/// The path of the group send.
pub(crate) const GROUP_SEND_PATH: &str = "/_switchyard/group-send";

/// The largest body read: an event at its limit plus room for the name.
const MAX_BODY_BYTES: usize = MAX_EVENT_BYTES + 4096;

/// Seconds a publisher is told to wait before trying again.
const RETRY_AFTER_SECS: &str = "1";

/// `POST /_switchyard/send`.
pub(crate) async fn send(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    if let Some(refused) = admin::refusal(&app, &headers) {
        return refused;
    }
    let (channel, event) = match parse(body, "channel").await {
        Ok(parsed) => parsed,
        Err(refused) => return refused.into_response(),
    };
    match app.host.layer().send(&channel, event).await {
        Ok(()) => {
            tracing::debug!(channel, "published to a channel through the admin API");
            (StatusCode::ACCEPTED, Json(json!({"sent": true}))).into_response()
        }
        Err(err) => layer_error(&err).into_response(),
    }
}

/// `POST /_switchyard/group-send`.
pub(crate) async fn group_send(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refused) = admin::refusal(&app, &headers) {
        return refused;
    }
    let (group, event) = match parse(body, "group").await {
        Ok(parsed) => parsed,
        Err(refused) => return refused.into_response(),
    };
    match app.host.layer().group_send(&group, event).await {
        Ok(report) => {
            tracing::debug!(
                group,
                delivered = report.delivered,
                over_capacity = report.over_capacity,
                "published to a group through the admin API"
            );
            let body = json!({
                "delivered": report.delivered,
                "over_capacity": report.over_capacity,
            });
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Err(err) => layer_error(&err).into_response(),
    }
}

/// A publish refused: its status, and a JSON body naming the rule.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    error: &'static str,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "message": self.message});
        let mut response = (self.status, Json(body)).into_response();
        if matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// A 400 naming the rule that was broken.
fn bad_request(error: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        error,
        message: message.into(),
    }
}

/// Reads the body: `{"<name_key>": NAME, "event": {...}}`, the event
/// checked as a layer event. The name is checked by the layer itself.
async fn parse(body: Body, name_key: &str) -> Result<(String, Event), Refusal> {
    let bytes: Bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(bad_request(
                "too_large",
                format!(
                    "the body is larger than {MAX_BODY_BYTES} bytes (an event may have at most {MAX_EVENT_BYTES})"
                ),
            ));
        }
        Err(err) => {
            return Err(bad_request(
                "invalid_body",
                format!("reading the body: {err}"),
            ));
        }
    };
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|err| bad_request("invalid_json", format!("the body is not JSON: {err}")))?;
    let Value::Object(mut fields) = value else {
        return Err(bad_request(
            "invalid_body",
            format!("the body must be a JSON object {{\"{name_key}\": ..., \"event\": {{...}}}}"),
        ));
    };
    let name = take_name(&mut fields, name_key)?;
    let Some(event) = fields.remove("event") else {
        return Err(bad_request(
            "invalid_body",
            "no \"event\" key (an event is a JSON object like {\"type\": \"chat.message\", ...})",
        ));
    };
    if let Some(extra) = fields.keys().next() {
        return Err(bad_request(
            "invalid_body",
            format!("unknown key {extra:?}: the body has only \"{name_key}\" and \"event\""),
        ));
    }
    let event = Event::from_value(event).map_err(|err| match err {
        LayerError::InvalidEvent(reason) => {
            bad_request("invalid_event", format!("invalid event: {reason}"))
        }
        other => layer_error(&other),
    })?;
    Ok((name, event))
}

fn take_name(fields: &mut Map<String, Value>, key: &str) -> Result<String, Refusal> {
    match fields.remove(key) {
        Some(Value::String(name)) => Ok(name),
        Some(_) => Err(bad_request(
            "invalid_body",
            format!("\"{key}\" must be a string"),
        )),
        None => Err(bad_request("invalid_body", format!("no \"{key}\" key"))),
    }
}

/// The answer to a layer's refusal.
fn layer_error(err: &LayerError) -> Refusal {
    let (status, error) = match err {
        LayerError::InvalidChannelName { .. } => (StatusCode::BAD_REQUEST, "invalid_channel_name"),
        LayerError::InvalidGroupName { .. } => (StatusCode::BAD_REQUEST, "invalid_group_name"),
        LayerError::InvalidEvent(_) => (StatusCode::BAD_REQUEST, "invalid_event"),
        LayerError::ChannelFull { .. } => (StatusCode::TOO_MANY_REQUESTS, "channel_full"),
        LayerError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    if status == StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!("publish through the admin API failed: {err}");
    }
    Refusal {
        status,
        error,
        message: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn refusal_of(body: &str, key: &str) -> (StatusCode, Value) {
        let response = parse(Body::from(body.to_owned()), key)
            .await
            .expect_err("refused")
            .into_response();
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, serde_json::from_slice(&bytes).expect("JSON"))
    }

    #[tokio::test]
    async fn each_bad_body_names_its_rule() {
        for (body, error, words) in [
            ("{nope", "invalid_json", "not JSON"),
            ("[1]", "invalid_body", "JSON object"),
            (
                r#"{"event": {"type": "a"}}"#,
                "invalid_body",
                "no \"group\"",
            ),
            (
                r#"{"group": 1, "event": {"type": "a"}}"#,
                "invalid_body",
                "must be a string",
            ),
            (r#"{"group": "g"}"#, "invalid_body", "no \"event\""),
            (
                r#"{"group": "g", "event": {"type": "a"}, "x": 1}"#,
                "invalid_body",
                "unknown key",
            ),
            (
                r#"{"group": "g", "event": [1]}"#,
                "invalid_event",
                "must be a JSON object",
            ),
            (
                r#"{"group": "g", "event": {"text": "hi"}}"#,
                "invalid_event",
                "no \"type\"",
            ),
            (
                r#"{"group": "g", "event": {"type": 3}}"#,
                "invalid_event",
                "must be a string",
            ),
        ] {
            let (status, answer) = refusal_of(body, "group").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(answer["error"], error, "{body}: {answer}");
            let message = answer["message"].as_str().expect("message");
            assert!(message.contains(words), "{body}: {message}");
        }
    }

    #[tokio::test]
    async fn an_oversized_body_is_refused_unread() {
        let body = format!(
            r#"{{"group": "g", "event": {{"type": "a", "p": "{}"}}}}"#,
            "x".repeat(MAX_BODY_BYTES)
        );
        let (status, answer) = refusal_of(&body, "group").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(answer["error"], "too_large", "{answer}");
    }

    #[test]
    fn layer_errors_map_to_distinct_statuses() {
        let full = layer_error(&LayerError::ChannelFull {
            channel: "c".into(),
        })
        .into_response();
        assert_eq!(full.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(full.headers().contains_key(header::RETRY_AFTER));
        let down = layer_error(&LayerError::Unavailable("down".into())).into_response();
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(down.headers().contains_key(header::RETRY_AFTER));
        let name = layer_error(&LayerError::InvalidGroupName {
            name: "a b".into(),
            reason: "bad".into(),
        })
        .into_response();
        assert_eq!(name.status(), StatusCode::BAD_REQUEST);
    }
}
