//! {{name}} tested without a server: the built component
//! (`dist/{{name}}.wasm`, from `switchyard build`) in-process with the real
//! host and the in-memory layer (switchyard-testing).

use std::time::Duration;

use serde_json::json;
use switchyard_testing::TestHost;

const COMPONENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/{{name}}.wasm");
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_message_reaches_the_room_and_only_the_room() {
    let host = TestHost::load(COMPONENT)
        .await
        .expect("dist/{{name}}.wasm: run `switchyard build` first");
    let mut alice = host.connect("/ws/{{name}}/lobby/").await.expect("connect");
    let mut bob = host.connect("/ws/{{name}}/lobby/").await.expect("connect");
    let mut carol = host.connect("/ws/{{name}}/other/").await.expect("connect");

    alice.send_json_to(&json!({"message": "hello"})).await.expect("send");
    assert_eq!(alice.receive_json_from(WAIT).await.expect("echo"), json!({"message": "hello"}));
    assert_eq!(bob.receive_json_from(WAIT).await.expect("fan-out"), json!({"message": "hello"}));
    assert!(carol.receive_nothing(Duration::from_millis(200)).await);

    host.group_send("{{name}}_other", &json!({"type": "room.message", "message": "from the test"}))
        .await
        .expect("group send");
    assert_eq!(
        carol.receive_json_from(WAIT).await.expect("group send"),
        json!({"message": "from the test"})
    );
    for communicator in [alice, bob, carol] {
        communicator.disconnect(1000).await;
    }
}
