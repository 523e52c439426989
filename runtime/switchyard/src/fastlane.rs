//! Host-side broadcast on the socket: a channel-layer event that carries a
//! ready frame (`host.group-send-frame`, or an event with a `"__frame__"`
//! key) is written to the client by the host, without calling the consumer.
//!
//! The frame goes into the connection's outbound queue, the one the
//! consumer's own sends use, so it keeps its place among the connection's
//! frames and events, and the slow-reader rule holds: a full queue closes the
//! connection with 1008. The payload is the event's shared `Bytes`: queueing
//! it for each member copies a pointer, and the socket's write is the only
//! copy.

use switchyard_host::{Outbound, OutboundOverflow, OutboundSender};
use switchyard_layer::queue::TrySendError;
use switchyard_layer::{Event, ReadyFrame};
use tungstenite::{Message, Utf8Bytes};

/// Queues the event's ready frame for the socket, if it has one: `None` for
/// an ordinary event (the consumer's `event` export handles it), otherwise
/// whether the frame fit in the outbound queue.
pub(crate) fn queue_frame(
    event: &Event,
    outbound: &OutboundSender,
) -> Option<Result<(), OutboundOverflow>> {
    let frame = event.frame()?;
    Some(
        outbound
            .try_send(Outbound::Ready(frame.clone()))
            .map_err(|err| match err {
                TrySendError::Full(_) => OutboundOverflow::QueueFull,
                TrySendError::Closed(_) => OutboundOverflow::Gone,
            }),
    )
}

/// The WebSocket message for a ready frame, sharing its payload.
pub(crate) fn message(frame: &ReadyFrame) -> Message {
    if !frame.is_text() {
        return Message::Binary(frame.payload());
    }
    // A text frame's payload is UTF-8 by construction (`ReadyFrame::text`
    // takes a `String`); the check costs a pass over the bytes, no copy.
    match Utf8Bytes::try_from(frame.payload()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Text(
            String::from_utf8_lossy(&frame.payload())
                .into_owned()
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_events_with_a_frame_are_queued() {
        let (tx, mut rx) = switchyard_host::outbound_queue(1);
        let plain = Event::from_json(r#"{"type":"a"}"#).expect("event");
        assert_eq!(queue_frame(&plain, &tx), None);
        let framed = Event::with_frame(r#"{"type":"a"}"#, ReadyFrame::text("hi")).expect("event");
        assert_eq!(queue_frame(&framed, &tx), Some(Ok(())));
        assert_eq!(
            queue_frame(&framed, &tx),
            Some(Err(OutboundOverflow::QueueFull))
        );
        assert_eq!(
            rx.try_recv().expect("queued"),
            Outbound::Ready(ReadyFrame::text("hi"))
        );
        drop(rx);
        assert_eq!(queue_frame(&framed, &tx), Some(Err(OutboundOverflow::Gone)));
    }

    #[test]
    fn messages_share_the_payload() {
        let frame = ReadyFrame::binary(vec![1u8, 2, 3]);
        let Message::Binary(bytes) = message(&frame) else {
            panic!("a binary message");
        };
        assert_eq!(bytes.as_ptr(), frame.payload().as_ptr());
        let text = ReadyFrame::text("hé");
        assert_eq!(message(&text), Message::Text("hé".into()));
    }
}
