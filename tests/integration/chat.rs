//! The chat example plugin: the Django Channels tutorial protocol.

use serde_json::json;
use switchyard_tests::{Client, TestServer};

#[tokio::test]
async fn rooms_fan_out_to_every_member_and_stay_isolated() {
    let server = TestServer::start().await;
    let mut lobby: Vec<Client> = Vec::new();
    for _ in 0..3 {
        lobby.push(Client::connect(&server, "/ws/chat/lobby/").await);
    }
    let mut other = Client::connect(&server, "/ws/chat/other/").await;

    lobby[0].send_json(&json!({"message": "hello lobby"})).await;
    for client in &mut lobby {
        // The sender is a member too and gets its own message back.
        assert_eq!(client.recv_json().await, json!({"message": "hello lobby"}));
    }
    // Other's own message comes after the lobby's: had the lobby's reached
    // it, that would come first.
    other.send_json(&json!({"message": "hello other"})).await;
    other
        .expect_nothing_before(&[json!({"message": "hello other"})])
        .await;

    // And the lobby's next message reaches its members with nothing from
    // the other room before it.
    lobby[0].send_json(&json!({"message": "lobby again"})).await;
    for client in &mut lobby {
        client
            .expect_nothing_before(&[json!({"message": "lobby again"})])
            .await;
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn each_senders_messages_arrive_in_order() {
    let server = TestServer::start().await;
    let mut a = Client::connect(&server, "/ws/chat/order/").await;
    let mut b = Client::connect(&server, "/ws/chat/order/").await;
    for i in 0..50 {
        a.send_json(&json!({"message": i})).await;
    }
    for i in 0..50 {
        assert_eq!(b.recv_json().await, json!({"message": i}));
        assert_eq!(a.recv_json().await, json!({"message": i}));
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn invalid_input_gets_an_error_frame_and_the_socket_stays_open() {
    let server = TestServer::start().await;
    let mut client = Client::connect(&server, "/ws/chat/errors/").await;

    client.send_text("{not json").await;
    let reply = client.recv_json().await;
    assert_eq!(reply["error"], "invalid_json", "{reply}");
    assert!(reply["detail"].is_string(), "{reply}");

    client.send_json(&json!({"text": "no message key"})).await;
    assert_eq!(client.recv_json().await["error"], "missing_message");

    client.send_json(&json!(["not", "an", "object"])).await;
    assert_eq!(client.recv_json().await["error"], "missing_message");

    client.send_binary(b"\x00\x01").await;
    assert_eq!(client.recv_json().await["error"], "binary_not_supported");

    // Still a working member of the room.
    client.send_json(&json!({"message": "still here"})).await;
    assert_eq!(client.recv_json().await, json!({"message": "still here"}));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_room_name_invalid_as_a_group_name_is_rejected_with_403() {
    let server = TestServer::start().await;
    // `str` matches "caf%C3%A9" decoded to "café", which is not a valid
    // Channels group name, so the consumer rejects the handshake.
    let status = switchyard_tests::handshake_status(&server, "/ws/chat/caf%C3%A9/").await;
    assert_eq!(status, 403);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_disconnected_member_no_longer_receives_and_the_rest_do() {
    let server = TestServer::start().await;
    let mut a = Client::connect(&server, "/ws/chat/leave/").await;
    let mut b = Client::connect(&server, "/ws/chat/leave/").await;
    let c = Client::connect(&server, "/ws/chat/leave/").await;
    c.close().await;
    a.send_json(&json!({"message": "after leave"})).await;
    assert_eq!(a.recv_json().await, json!({"message": "after leave"}));
    assert_eq!(b.recv_json().await, json!({"message": "after leave"}));
    server.shutdown().await.expect("clean shutdown");
}
