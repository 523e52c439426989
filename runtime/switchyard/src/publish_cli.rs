//! `switchyard send` and `switchyard group-send`: publish one event from a
//! shell, a cron job or a deploy script.
//!
//! With `--url` (and `--token`) the command calls a running server's
//! publish API (`POST /_switchyard/send`, `/group-send`); that is the only way into the
//! in-memory layer, which lives inside the server. With `--redis-url`, or
//! a config file naming Redis hosts, it writes straight into Redis through
//! the channels_redis-compatible layer, as Django's shell can, with no
//! server running. `--url` wins when both are given.
//!
//! Exit codes ([`Exit`]): 0 sent; 1 anything else (e.g. an answer that
//! makes no sense); 2 bad input (an invalid name or event, a bad flag or
//! config file, nowhere to publish); 3 refused by the server (401: missing
//! or wrong token, 404: no admin token configured there); 4 unavailable
//! (the server or Redis cannot be reached, or the layer is down); 5 the
//! channel is full (Channels' `ChannelFull`).

use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use switchyard_layer::{ChannelLayer as _, Event, LayerError, RedisLayer};

use crate::cli::{GroupSendArgs, PublishVia, SendArgs};
use crate::config::Config;
use crate::publish::{GROUP_SEND_PATH, SEND_PATH};

/// How long the HTTP call may take in all.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The outcome of a publish command, as its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// The event was handed to the layer.
    Sent = 0,
    /// Something unexpected.
    Failed = 1,
    /// An invalid name, event, flag or config file.
    BadInput = 2,
    /// The server refused the token (or has no admin API).
    Refused = 3,
    /// The server, Redis or the layer cannot be reached.
    Unavailable = 4,
    /// The channel is at capacity.
    ChannelFull = 5,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// What to publish.
#[derive(Debug)]
enum Target {
    Channel(String),
    Group(String),
}

impl Target {
    fn key(&self) -> &'static str {
        match self {
            Self::Channel(_) => "channel",
            Self::Group(_) => "group",
        }
    }

    fn name(&self) -> &str {
        match self {
            Self::Channel(name) | Self::Group(name) => name,
        }
    }
}

/// `switchyard send`.
pub async fn send(args: SendArgs) -> Exit {
    publish(Target::Channel(args.channel), &args.event, args.via).await
}

/// `switchyard group-send`.
pub async fn group_send(args: GroupSendArgs) -> Exit {
    publish(Target::Group(args.group), &args.event, args.via).await
}

async fn publish(target: Target, event: &str, via: PublishVia) -> Exit {
    // Checked here first, so that a bad event is the same error whichever
    // way it would have gone.
    let event = match Event::from_json(event) {
        Ok(event) => event,
        Err(err) => return failed(Exit::BadInput, &err),
    };
    if let Some(url) = via.url.filter(|url| !url.is_empty()) {
        let token = via.token.unwrap_or_default();
        return tokio::task::spawn_blocking(move || over_http(&url, &token, &target, &event))
            .await
            .unwrap_or(Exit::Failed);
    }
    let redis = match redis_config(via.redis_url, via.config.as_deref()) {
        Ok(redis) => redis,
        Err(err) => {
            eprintln!("error: {err:#}");
            return Exit::BadInput;
        }
    };
    let layer = match RedisLayer::new(redis) {
        Ok(layer) => layer,
        Err(err) => return failed(Exit::BadInput, &err),
    };
    let result = match &target {
        Target::Channel(channel) => layer
            .send(channel, event)
            .await
            .map(|()| json!({"sent": true})),
        Target::Group(group) => layer.group_send(group, event).await.map(
            |report| json!({"delivered": report.delivered, "over_capacity": report.over_capacity}),
        ),
    };
    match result {
        Ok(answer) => {
            println!("{answer}");
            Exit::Sent
        }
        Err(err) => failed(exit_for(&err), &err),
    }
}

/// The Redis layer's options from `--redis-url` or the config file.
fn redis_config(
    redis_url: Option<String>,
    config: Option<&std::path::Path>,
) -> anyhow::Result<switchyard_layer::RedisConfig> {
    let mut settings = match config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(url) = redis_url.filter(|url| !url.is_empty()) {
        settings.redis_url = Some(url);
    }
    let where_from = config.map_or_else(
        || "no --redis-url".to_owned(),
        |path| {
            format!(
                "{} names no Redis host ([redis] hosts) and no --redis-url",
                path.display()
            )
        },
    );
    settings.redis_config()?.with_context(|| {
        format!(
            "{where_from}: publish through a running server with --url and --token, \
             or straight into Redis with --redis-url"
        )
    })
}

fn exit_for(err: &LayerError) -> Exit {
    match err {
        LayerError::ChannelFull { .. } => Exit::ChannelFull,
        LayerError::Unavailable(_) => Exit::Unavailable,
        LayerError::InvalidChannelName { .. }
        | LayerError::InvalidGroupName { .. }
        | LayerError::InvalidEvent(_) => Exit::BadInput,
    }
}

fn failed(exit: Exit, err: &dyn std::fmt::Display) -> Exit {
    eprintln!("error: {err}");
    exit
}

/// Calls the server's publish API.
fn over_http(base: &str, token: &str, target: &Target, event: &Event) -> Exit {
    let path = match target {
        Target::Channel(_) => SEND_PATH,
        Target::Group(_) => GROUP_SEND_PATH,
    };
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let body = json!({target.key(): target.name(), "event": event.to_value()});
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(HTTP_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let response = agent
        .post(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .send_json(&body);
    let mut response = match response {
        Ok(response) => response,
        Err(err) => {
            eprintln!("error: cannot reach {url}: {err}");
            return Exit::Unavailable;
        }
    };
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let message = answer["message"].as_str().unwrap_or(text.trim());
    match status {
        200..=299 => {
            println!("{}", text.trim());
            Exit::Sent
        }
        400 => failed(Exit::BadInput, &format!("{url} answered 400: {message}")),
        401 => failed(
            Exit::Refused,
            &format!("{url} answered 401: wrong or missing --token"),
        ),
        404 => failed(
            Exit::Refused,
            &format!(
                "{url} answered 404: the server has no admin.token (or this is not its admin address)"
            ),
        ),
        429 => failed(Exit::ChannelFull, &format!("{url} answered 429: {message}")),
        502..=504 => failed(
            Exit::Unavailable,
            &format!("{url} answered {status}: {message}"),
        ),
        _ => failed(Exit::Failed, &format!("{url} answered {status}: {message}")),
    }
}
