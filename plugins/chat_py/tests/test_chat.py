"""The Python chat, tested through a real switchyard process
(``switchyard_testing``). Run from the repository root:

    SWITCHYARD_PLUGINS=target/test-plugins/sdk SWITCHYARD_BIN=target/debug/switchyard \\
        target/sdk-tools/venv/bin/python -m pytest plugins/chat_py
"""

import pytest

from switchyard_testing import SwitchyardServer, WebsocketCommunicator

ROOM = "/ws/chat-py/{}/"


@pytest.fixture(scope="module")
def server():
    with SwitchyardServer() as server:
        yield server


def joined(server, room):
    communicator = WebsocketCommunicator(server, ROOM.format(room))
    connected, _ = communicator.connect()
    assert connected
    return communicator


def test_a_message_reaches_the_room_and_only_the_room(server):
    alice, bob, carol = joined(server, "lobby"), joined(server, "lobby"), joined(server, "other")
    alice.send_json_to({"message": "hello"})
    assert alice.receive_json_from() == {"message": "hello"}
    assert bob.receive_json_from() == {"message": "hello"}
    carol.send_json_to({"message": "marker"})
    # Had alice's message reached carol, it would come before the marker.
    assert carol.receive_json_from() == {"message": "marker"}
    for communicator in (alice, bob, carol):
        communicator.disconnect()


def test_bad_json_is_answered(server):
    communicator = joined(server, "errors")
    communicator.send_to(text_data="{not json")
    assert communicator.receive_json_from()["error"] == "invalid_json"
    communicator.send_json_to({"text": "no message"})
    assert communicator.receive_json_from()["error"] == "missing_message"
    assert communicator.receive_nothing()
    communicator.disconnect()


def test_a_group_send_from_the_test_reaches_the_members(server):
    communicator = joined(server, "news")
    report = server.group_send("chat_news", {"type": "chat.message", "message": "from the test"})
    assert report["delivered"] == 1
    assert communicator.receive_json_from() == {"message": "from the test"}
    communicator.disconnect()


def test_an_event_without_a_handler_closes_that_connection_with_1011(server):
    doomed, calm = joined(server, "boom"), joined(server, "calm")
    server.group_send("chat_boom", {"type": "chat.explode"})
    assert doomed.receive_close() == 1011
    calm.send_json_to({"message": "still here"})
    assert calm.receive_json_from() == {"message": "still here"}
    calm.disconnect()


def test_a_bad_room_name_is_refused_with_403(server):
    connected, status = WebsocketCommunicator(server, ROOM.format("caf%C3%A9")).connect()
    assert (connected, status) == (False, 403)
