//! The `switchyard:consumer/host` interface, implemented on [`HostCtx`].

use switchyard_layer::{Event, LayerError, ReadyFrame};
use wasmtime::component::Resource;

use crate::bindings::{Frame, Host, HostConnection, Level, TypesHost, WitLayerError};
use crate::connection::{Connection, Handshake, OutFrame, Outbound, REFUSAL_STATUSES};
use crate::state::HostCtx;

/// Longest close reason the WebSocket protocol allows (a control frame holds
/// 125 bytes, two of them the code).
const MAX_CLOSE_REASON: usize = 123;

/// The WIT case of a layer error. Every kind the layer has today has a case
/// of its own; `other` is for kinds a later layer adds (a 0.1 guest gets
/// those as `unavailable`, see `host_api_v0_1`).
pub(crate) fn to_wit(err: LayerError) -> WitLayerError {
    match err {
        LayerError::ChannelFull { .. } => WitLayerError::ChannelFull,
        err @ (LayerError::InvalidChannelName { .. } | LayerError::InvalidGroupName { .. }) => {
            WitLayerError::InvalidName(err.to_string())
        }
        LayerError::InvalidEvent(reason) => WitLayerError::InvalidEvent(reason),
        LayerError::Unavailable(reason) => WitLayerError::Unavailable(reason),
    }
}

/// Cut a close reason to what fits in a close frame, on a char boundary.
fn truncate_reason(mut reason: String) -> String {
    if reason.len() > MAX_CLOSE_REASON {
        let mut end = MAX_CLOSE_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

/// Close codes a plugin may send: 1000, 1011 (internal error: the Python and
/// JS SDKs close a connection whose handler raised with it, as the host does
/// for a trap) and the application range. Others (1001-1015) describe the
/// server or the protocol and are the host's to use.
fn valid_app_close_code(code: u16) -> bool {
    code == 1000 || code == 1011 || (3000..=4999).contains(&code)
}

impl HostCtx {
    fn conn(&mut self, handle: &Resource<Connection>) -> wasmtime::Result<&mut Connection> {
        Ok(self.connections.get_mut(handle)?)
    }
}

impl TypesHost for HostCtx {}

impl HostConnection for HostCtx {
    async fn id(&mut self, handle: Resource<Connection>) -> wasmtime::Result<u64> {
        Ok(self.conn(&handle)?.id)
    }

    async fn channel_name(&mut self, handle: Resource<Connection>) -> wasmtime::Result<String> {
        Ok(self.conn(&handle)?.channel_name.to_string())
    }

    async fn accept(
        &mut self,
        handle: Resource<Connection>,
        subprotocol: Option<String>,
    ) -> wasmtime::Result<()> {
        let conn = self.conn(&handle)?;
        if conn.handshake == Handshake::Pending {
            conn.handshake = Handshake::Accepted { subprotocol };
        }
        Ok(())
    }

    async fn send(&mut self, handle: Resource<Connection>, message: Frame) -> wasmtime::Result<()> {
        let conn = self.conn(&handle)?;
        match conn.handshake {
            Handshake::Pending => {
                wasmtime::bail!("send before accept: call `accept` in `connect` first")
            }
            Handshake::Rejected { .. } | Handshake::Refused { .. } => return Ok(()),
            Handshake::Accepted { .. } => {}
        }
        if conn.closed {
            return Ok(());
        }
        let frame = match message {
            Frame::Text(text) => OutFrame::Text(text),
            Frame::Binary(bytes) => OutFrame::Binary(bytes.into()),
        };
        conn.push(Outbound::Frame(frame));
        Ok(())
    }

    async fn close(
        &mut self,
        handle: Resource<Connection>,
        code: u16,
        reason: Option<String>,
    ) -> wasmtime::Result<()> {
        let plugin = std::sync::Arc::clone(&self.plugin);
        let conn = self.conn(&handle)?;
        if conn.closed {
            return Ok(());
        }
        conn.closed = true;
        match conn.handshake {
            Handshake::Pending => {
                conn.handshake = Handshake::Rejected { code, reason };
            }
            Handshake::Rejected { .. } | Handshake::Refused { .. } => {}
            Handshake::Accepted { .. } => {
                let code = if valid_app_close_code(code) {
                    code
                } else {
                    tracing::warn!(
                        plugin = %plugin,
                        connection = conn.id,
                        code,
                        "plugin used a reserved close code; sending 1000 instead"
                    );
                    1000
                };
                let reason = truncate_reason(reason.unwrap_or_default());
                conn.push(Outbound::Close { code, reason });
            }
        }
        Ok(())
    }

    async fn refuse(
        &mut self,
        handle: Resource<Connection>,
        status: u16,
        retry_after_secs: Option<u32>,
    ) -> wasmtime::Result<()> {
        if !REFUSAL_STATUSES.contains(&status) {
            wasmtime::bail!(
                "refuse with HTTP {status}: a plugin may refuse with one of {REFUSAL_STATUSES:?}"
            );
        }
        let plugin = std::sync::Arc::clone(&self.plugin);
        let conn = self.conn(&handle)?;
        if conn.closed || conn.handshake != Handshake::Pending {
            tracing::debug!(
                plugin = %plugin,
                connection = conn.id,
                "refuse after the handshake was answered; ignored"
            );
            return Ok(());
        }
        conn.closed = true;
        conn.handshake = Handshake::Refused {
            status,
            retry_after_secs,
        };
        Ok(())
    }

    async fn group_add(
        &mut self,
        handle: Resource<Connection>,
        group: String,
    ) -> wasmtime::Result<Result<(), WitLayerError>> {
        let channel = std::sync::Arc::clone(&self.conn(&handle)?.channel_name);
        let result = self.layer.group_add(&group, &channel).await;
        if result.is_ok() {
            self.conn(&handle)?.groups.insert(group);
        }
        Ok(result.map_err(to_wit))
    }

    async fn group_discard(
        &mut self,
        handle: Resource<Connection>,
        group: String,
    ) -> wasmtime::Result<Result<(), WitLayerError>> {
        let channel = std::sync::Arc::clone(&self.conn(&handle)?.channel_name);
        let result = self.layer.group_discard(&group, &channel).await;
        if result.is_ok() {
            self.conn(&handle)?.groups.remove(&group);
        }
        Ok(result.map_err(to_wit))
    }

    async fn drop(&mut self, handle: Resource<Connection>) -> wasmtime::Result<()> {
        // The host owns connections; a guest can only borrow them, so there
        // is never a guest-owned handle to drop. Removing the entry here would
        // lose the state the host still needs.
        tracing::debug!(plugin = %self.plugin, rep = handle.rep(), "connection handle dropped");
        Ok(())
    }
}

impl HostCtx {
    /// `group-send` and `group-send-frame`: send, and log members skipped at
    /// capacity.
    async fn send_to_group(
        &mut self,
        group: String,
        event: Result<Event, LayerError>,
    ) -> wasmtime::Result<Result<(), WitLayerError>> {
        let event = match event {
            Ok(event) => event,
            Err(err) => return Ok(Err(to_wit(err))),
        };
        let result = self.layer.group_send(&group, event).await;
        if let Ok(report) = &result
            && report.over_capacity > 0
        {
            tracing::info!(
                plugin = %self.plugin,
                group,
                over_capacity = report.over_capacity,
                delivered = report.delivered,
                "group_send skipped members at capacity"
            );
        }
        Ok(result.map(drop).map_err(to_wit))
    }
}

impl Host for HostCtx {
    async fn group_send(
        &mut self,
        group: String,
        event: String,
    ) -> wasmtime::Result<Result<(), WitLayerError>> {
        let event = Event::from_json(&event);
        self.send_to_group(group, event).await
    }

    async fn group_send_frame(
        &mut self,
        group: String,
        event: String,
        message: Frame,
    ) -> wasmtime::Result<Result<(), WitLayerError>> {
        let frame = match message {
            Frame::Text(text) => ReadyFrame::text(text),
            Frame::Binary(bytes) => ReadyFrame::binary(bytes),
        };
        let event = Event::with_frame(&event, frame);
        self.send_to_group(group, event).await
    }

    async fn channel_send(
        &mut self,
        channel: String,
        event: String,
    ) -> wasmtime::Result<Result<(), WitLayerError>> {
        let event = match Event::from_json(&event) {
            Ok(event) => event,
            Err(err) => return Ok(Err(to_wit(err))),
        };
        Ok(self.layer.send(&channel, event).await.map_err(to_wit))
    }

    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let plugin = &*self.plugin;
        let connection = self
            .current_connection_id
            .load(std::sync::atomic::Ordering::Relaxed);
        match level {
            Level::Trace => tracing::trace!(plugin, connection, "{message}"),
            Level::Debug => tracing::debug!(plugin, connection, "{message}"),
            Level::Info => tracing::info!(plugin, connection, "{message}"),
            Level::Warn => tracing::warn!(plugin, connection, "{message}"),
            Level::Error => tracing::error!(plugin, connection, "{message}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_on_char_boundaries() {
        let long = "é".repeat(100);
        let cut = truncate_reason(long);
        assert!(cut.len() <= MAX_CLOSE_REASON);
        assert_eq!(cut.chars().count(), 61);
        assert_eq!(truncate_reason("bye".into()), "bye");
    }

    #[test]
    fn only_application_close_codes_pass() {
        assert!(valid_app_close_code(1000));
        assert!(valid_app_close_code(4000));
        assert!(!valid_app_close_code(1001));
        assert!(valid_app_close_code(1011));
        assert!(!valid_app_close_code(5000));
    }

    #[test]
    fn layer_errors_map_to_wit_variants() {
        assert!(matches!(
            to_wit(LayerError::ChannelFull {
                channel: "a".into()
            }),
            WitLayerError::ChannelFull
        ));
        match to_wit(LayerError::InvalidGroupName {
            name: "a b".into(),
            reason: "space".into(),
        }) {
            WitLayerError::InvalidName(text) => assert!(text.contains("a b"), "{text}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
