//! Live migration under load: members of a group receive a steady stream
//! of group events while their plugin is swapped with
//! `on-replace = "migrate"`; every member must receive every event, in
//! order, and the layer must never find a member's channel full (events
//! arriving while a connection migrates wait; they do not overflow it).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard::Config;
use switchyard::config::LayerSection;
use switchyard_layer::Event;
use switchyard_tests::plugin_dir::{Build, PluginDir};
use switchyard_tests::{Client, TestServer, test_config};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// How long a swap may take to go live, or a member to see it: only turns
/// a hang into a failure on a slow, busy machine.
const PATIENCE: Duration = Duration::from_secs(60);
const MEMBERS: usize = 30;
const SWAPS: usize = 4;
const ROOM: &str = "load";
/// Events each member's channel holds. Smaller than Channels' default so
/// that a migration that leaves the inbox unread for a few dozen
/// milliseconds overflows it at this test's rate; a member that reads its
/// inbox as it goes never comes near it.
const CAPACITY: usize = 20;
/// The sender's pace: one group event per tick.
const TICK: Duration = Duration::from_millis(4);

fn manifest() -> String {
    "routes = [\"ws/chat/<str:room_name>/\"]\non-replace = \"migrate\"\n".to_owned()
}

/// What a member has seen so far.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Events received.
    frames: usize,
    /// The version tag of the latest (None: v1).
    version: Option<String>,
}

/// Reads a member's socket until the event `last` (once the sender says
/// which that is) or until nothing comes for [`PATIENCE`]; returns the
/// sequence numbers received, in order, and whether the socket closed.
async fn read_member(
    mut client: Client,
    progress: watch::Sender<Progress>,
    mut last: watch::Receiver<Option<u64>>,
) -> (Vec<u64>, Option<String>) {
    let mut seqs = Vec::new();
    loop {
        if let Some(end) = *last.borrow_and_update()
            && seqs.last().is_some_and(|&seq| seq >= end)
        {
            return (seqs, None);
        }
        let message = tokio::select! {
            message = client.next() => message,
            // The sender stopped: look at the end again.
            Ok(()) = last.changed() => continue,
        };
        match message {
            Ok(Message::Text(text)) => {
                let frame: Value = serde_json::from_str(text.as_str()).expect("JSON frame");
                // The counter also answers the member's own commands.
                let Some(seq) = frame["message"]["seq"].as_u64() else {
                    continue;
                };
                seqs.push(seq);
                progress.send_modify(|p| {
                    p.frames += 1;
                    p.version = frame["version"].as_str().map(str::to_owned);
                });
            }
            Ok(other) => return (seqs, Some(format!("{other:?}"))),
            Err(err) => return (seqs, Some(err.to_string())),
        }
    }
}

/// Waits until every member has received an event after now, from
/// `version`; for each member, whether it did.
async fn wait_for(progress: &mut [watch::Receiver<Progress>], version: Option<&str>) -> Vec<bool> {
    let marks: Vec<usize> = progress.iter().map(|p| p.borrow().frames).collect();
    let waits = progress.iter_mut().zip(marks).map(|(p, mark)| async move {
        tokio::time::timeout(
            PATIENCE,
            p.wait_for(|p| p.frames > mark && p.version.as_deref() == version),
        )
        .await
        .is_ok_and(|seen| seen.is_ok())
    });
    futures_util::future::join_all(waits).await
}

/// The version a new connection is served by (None: v1).
async fn version_of_new_connection(server: &TestServer) -> Option<String> {
    let mut client = Client::connect(server, "/ws/chat/probe/").await;
    client.send_json(&json!({"message": {"seq": 0}})).await;
    let reply = client.recv_json().await;
    client.close().await;
    reply["version"].as_str().map(str::to_owned)
}

/// Sends one group event per [`TICK`] until stopped; returns the last
/// sequence number sent and how many members the layer skipped because
/// their channel was full.
fn start_sender(
    server: &TestServer,
    group: String,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<(u64, usize)> {
    let layer = Arc::clone(server.host.layer());
    tokio::spawn(async move {
        let mut seq = 0u64;
        let mut skipped = 0;
        let mut ticks = tokio::time::interval(TICK);
        while !stop.is_cancelled() {
            ticks.tick().await;
            let event = json!({"type": "chat.message", "message": {"seq": seq}});
            let event = Event::from_value(event).expect("a valid event");
            let report = layer.group_send(&group, event).await.expect("group send");
            skipped += report.over_capacity;
            seq += 1;
        }
        (seq - 1, skipped)
    })
}

/// The members, reading, and what they have seen so far.
struct Members {
    progress: Vec<watch::Receiver<Progress>>,
    readers: Vec<tokio::task::JoinHandle<(Vec<u64>, Option<String>)>>,
    last: watch::Sender<Option<u64>>,
}

impl Members {
    fn new() -> Self {
        Self {
            progress: Vec::new(),
            readers: Vec::new(),
            last: watch::channel(None).0,
        }
    }

    fn add(&mut self, client: Client) {
        let (tx, rx) = watch::channel(Progress::default());
        self.progress.push(rx);
        self.readers
            .push(tokio::spawn(read_member(client, tx, self.last.subscribe())));
    }

    /// Waits until every member got an event after now from `version`.
    async fn all_reach(&mut self, version: Option<&str>, when: &str) {
        for (member, reached) in wait_for(&mut self.progress, version)
            .await
            .into_iter()
            .enumerate()
        {
            assert!(
                reached,
                "{when}: member {member} never got an event from {version:?}"
            );
        }
    }

    /// Stops the sender, then checks that every member got every event
    /// once, in order, and that no group send found a channel full.
    async fn assert_complete(
        self,
        stop: &CancellationToken,
        sender: tokio::task::JoinHandle<(u64, usize)>,
    ) {
        stop.cancel();
        let (last, skipped) = sender.await.expect("sender");
        self.last.send_replace(Some(last));
        for (member, reader) in self.readers.into_iter().enumerate() {
            let (seqs, closed) = reader.await.expect("reader");
            assert_eq!(closed, None, "member {member}'s socket ended");
            let missing: Vec<u64> = (0..=last).filter(|seq| !seqs.contains(seq)).collect();
            assert!(
                missing.is_empty(),
                "member {member} missed {} of {} events, first {:?}",
                missing.len(),
                last + 1,
                &missing[..missing.len().min(10)]
            );
            assert_eq!(
                seqs,
                (0..=last).collect::<Vec<_>>(),
                "member {member}: every event once, in order"
            );
        }
        assert_eq!(skipped, 0, "group sends found members' channels full");
    }
}

fn server_config(dir: &PluginDir) -> Config {
    Config {
        plugins: dir.path().to_path_buf(),
        layer: LayerSection {
            capacity: CAPACITY,
            ..LayerSection::default()
        },
        ..test_config()
    }
}

/// The chat scenario of issue 11 at a size a CI machine affords: chat
/// members, a steady stream of room events, swaps back and forth.
#[tokio::test]
async fn chat_members_get_every_event_in_order_through_migrate_swaps() {
    let dir = PluginDir::new();
    dir.install("chat", Build::V1, &manifest());
    let server = TestServer::start_with(server_config(&dir)).await;
    let mut members = Members::new();
    for _ in 0..MEMBERS {
        members.add(Client::connect(&server, &format!("/ws/chat/{ROOM}/")).await);
    }
    let stop = CancellationToken::new();
    let sender = start_sender(&server, format!("chat_{ROOM}"), stop.clone());
    // Traffic flows before the first swap...
    members.all_reach(None, "before the swaps").await;
    for swap in 0..SWAPS {
        let (build, version) = if swap % 2 == 0 {
            (Build::V2, Some("v2"))
        } else {
            (Build::V1, None)
        };
        dir.install("chat", build, &manifest());
        let start = Instant::now();
        while version_of_new_connection(&server).await.as_deref() != version {
            assert!(start.elapsed() < PATIENCE, "swap {swap} never went live");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // ...and through each swap, every member moves to the new version.
        members.all_reach(version, &format!("swap {swap}")).await;
    }
    members.assert_complete(&stop, sender).await;
    server.shutdown().await.expect("clean shutdown");
}

/// Migrations that take a while (the counter's `snapshot` sleeps, as a
/// big state or a busy machine would make it) while events keep coming:
/// at this rate each member's channel would fill several times over if
/// its events waited there.
#[tokio::test]
async fn events_arriving_during_a_slow_migration_wait_without_filling_the_channel() {
    const SNAPSHOT_MS: u64 = 400;
    let dir = PluginDir::new();
    let counter = "routes = [\"test/counter/\"]\non-replace = \"migrate\"\n";
    dir.install("counter", Build::V1, counter);
    let server = TestServer::start_with(server_config(&dir)).await;
    let mut members = Members::new();
    for _ in 0..MEMBERS / 3 {
        let mut client = Client::connect(&server, "/test/counter/").await;
        client.send_text(&format!("join {ROOM}")).await;
        client
            .send_text(&format!("slow snapshot {SNAPSHOT_MS}"))
            .await;
        // The second answer: both commands are done.
        client.recv_json().await;
        assert_eq!(client.recv_json().await["count"], 2);
        members.add(client);
    }
    let stop = CancellationToken::new();
    let sender = start_sender(&server, ROOM.to_owned(), stop.clone());
    members.all_reach(Some("v1"), "before the swap").await;
    dir.install("counter", Build::V2, counter);
    members.all_reach(Some("v2"), "after the swap").await;
    members.assert_complete(&stop, sender).await;
    server.shutdown().await.expect("clean shutdown");
}
