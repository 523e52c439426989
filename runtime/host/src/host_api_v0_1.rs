//! The 0.1 contract (`switchyard:consumer@0.1.x`, `wit/v0.1`) served by the
//! one host implementation: each 0.1 function calls its 0.2 twin and
//! converts the types. Components built against 0.1.x load and behave as
//! before.
//!
//! The one mapping that loses something: `layer-error.other` (0.2 only,
//! where kinds of failure a later host knows go) reaches a 0.1 guest as
//! `unavailable` with the same text. A 0.1 guest already treats
//! `unavailable` as "the operation failed for a reason outside my control",
//! which is what `other` means to a guest that cannot name it.

use wasmtime::component::Resource;

use crate::bindings::{Frame, Host, HostConnection, HttpContextHost, Level, WitLayerError, v0_1};
use crate::connection::Connection;
use crate::state::{ConsumerState, HostCtx};

/// A 0.2 layer error as a 0.1 guest can name it (see the module docs).
pub(crate) fn layer_error_to_v0_1(err: WitLayerError) -> v0_1::WitLayerError {
    match err {
        WitLayerError::ChannelFull => v0_1::WitLayerError::ChannelFull,
        WitLayerError::InvalidName(why) => v0_1::WitLayerError::InvalidName(why),
        WitLayerError::InvalidEvent(why) => v0_1::WitLayerError::InvalidEvent(why),
        WitLayerError::Unavailable(why) | WitLayerError::Other(why) => {
            v0_1::WitLayerError::Unavailable(why)
        }
    }
}

fn result_to_v0_1<T>(
    result: wasmtime::Result<Result<T, WitLayerError>>,
) -> wasmtime::Result<Result<T, v0_1::WitLayerError>> {
    result.map(|inner| inner.map_err(layer_error_to_v0_1))
}

/// A frame for a 0.1 guest.
pub(crate) fn frame_to_v0_1(frame: Frame) -> v0_1::Frame {
    match frame {
        Frame::Text(text) => v0_1::Frame::Text(text),
        Frame::Binary(bytes) => v0_1::Frame::Binary(bytes),
    }
}

fn frame_from_v0_1(frame: v0_1::Frame) -> Frame {
    match frame {
        v0_1::Frame::Text(text) => Frame::Text(text),
        v0_1::Frame::Binary(bytes) => Frame::Binary(bytes),
    }
}

impl v0_1::TypesHost for HostCtx {}

impl v0_1::HostConnection for HostCtx {
    async fn id(&mut self, handle: Resource<Connection>) -> wasmtime::Result<u64> {
        HostConnection::id(self, handle).await
    }

    async fn channel_name(&mut self, handle: Resource<Connection>) -> wasmtime::Result<String> {
        HostConnection::channel_name(self, handle).await
    }

    async fn accept(
        &mut self,
        handle: Resource<Connection>,
        subprotocol: Option<String>,
    ) -> wasmtime::Result<()> {
        HostConnection::accept(self, handle, subprotocol).await
    }

    async fn send(
        &mut self,
        handle: Resource<Connection>,
        message: v0_1::Frame,
    ) -> wasmtime::Result<()> {
        HostConnection::send(self, handle, frame_from_v0_1(message)).await
    }

    async fn close(
        &mut self,
        handle: Resource<Connection>,
        code: u16,
        reason: Option<String>,
    ) -> wasmtime::Result<()> {
        HostConnection::close(self, handle, code, reason).await
    }

    async fn refuse(
        &mut self,
        handle: Resource<Connection>,
        status: u16,
        retry_after_secs: Option<u32>,
    ) -> wasmtime::Result<()> {
        HostConnection::refuse(self, handle, status, retry_after_secs).await
    }

    async fn group_add(
        &mut self,
        handle: Resource<Connection>,
        group: String,
    ) -> wasmtime::Result<Result<(), v0_1::WitLayerError>> {
        result_to_v0_1(HostConnection::group_add(self, handle, group).await)
    }

    async fn group_discard(
        &mut self,
        handle: Resource<Connection>,
        group: String,
    ) -> wasmtime::Result<Result<(), v0_1::WitLayerError>> {
        result_to_v0_1(HostConnection::group_discard(self, handle, group).await)
    }

    async fn drop(&mut self, handle: Resource<Connection>) -> wasmtime::Result<()> {
        HostConnection::drop(self, handle).await
    }
}

impl v0_1::Host for HostCtx {
    async fn group_send(
        &mut self,
        group: String,
        event: String,
    ) -> wasmtime::Result<Result<(), v0_1::WitLayerError>> {
        result_to_v0_1(Host::group_send(self, group, event).await)
    }

    async fn group_send_frame(
        &mut self,
        group: String,
        event: String,
        message: v0_1::Frame,
    ) -> wasmtime::Result<Result<(), v0_1::WitLayerError>> {
        result_to_v0_1(Host::group_send_frame(self, group, event, frame_from_v0_1(message)).await)
    }

    async fn channel_send(
        &mut self,
        channel: String,
        event: String,
    ) -> wasmtime::Result<Result<(), v0_1::WitLayerError>> {
        result_to_v0_1(Host::channel_send(self, channel, event).await)
    }

    async fn log(&mut self, level: v0_1::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            v0_1::Level::Trace => Level::Trace,
            v0_1::Level::Debug => Level::Debug,
            v0_1::Level::Info => Level::Info,
            v0_1::Level::Warn => Level::Warn,
            v0_1::Level::Error => Level::Error,
        };
        Host::log(self, level, message).await
    }
}

impl v0_1::HttpContextHost for ConsumerState {
    async fn route(&mut self) -> wasmtime::Result<String> {
        HttpContextHost::route(self).await
    }

    async fn url_route(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        HttpContextHost::url_route(self).await
    }

    async fn user(&mut self) -> wasmtime::Result<Option<String>> {
        HttpContextHost::user(self).await
    }

    async fn claims(&mut self) -> wasmtime::Result<Option<String>> {
        HttpContextHost::claims(self).await
    }

    async fn request_id(&mut self) -> wasmtime::Result<String> {
        HttpContextHost::request_id(self).await
    }

    async fn channel_name(&mut self) -> wasmtime::Result<Result<String, v0_1::WitLayerError>> {
        result_to_v0_1(HttpContextHost::channel_name(self).await)
    }

    async fn group_add(
        &mut self,
        group: String,
    ) -> wasmtime::Result<Result<(), v0_1::WitLayerError>> {
        result_to_v0_1(HttpContextHost::group_add(self, group).await)
    }

    async fn group_discard(
        &mut self,
        group: String,
    ) -> wasmtime::Result<Result<(), v0_1::WitLayerError>> {
        result_to_v0_1(HttpContextHost::group_discard(self, group).await)
    }

    async fn next_event(&mut self, timeout_ms: u32) -> wasmtime::Result<Option<String>> {
        HttpContextHost::next_event(self, timeout_ms).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_reaches_a_v0_1_guest_as_unavailable_with_its_text() {
        match layer_error_to_v0_1(WitLayerError::Other("a new kind".into())) {
            v0_1::WitLayerError::Unavailable(why) => assert_eq!(why, "a new kind"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            layer_error_to_v0_1(WitLayerError::ChannelFull),
            v0_1::WitLayerError::ChannelFull
        ));
        match layer_error_to_v0_1(WitLayerError::InvalidEvent("no type".into())) {
            v0_1::WitLayerError::InvalidEvent(why) => assert_eq!(why, "no type"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
