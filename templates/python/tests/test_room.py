"""{{name}} tested through a real switchyard process serving ``dist/``
(``switchyard build`` first). The binary is ``SWITCHYARD_BIN`` or
``switchyard`` on PATH."""

import os

import pytest

from switchyard_testing import SwitchyardServer, WebsocketCommunicator

DIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dist")


@pytest.fixture(scope="module")
def server():
    with SwitchyardServer(plugins=DIST) as server:
        yield server


def joined(server, room):
    communicator = WebsocketCommunicator(server, f"/ws/{{name}}/{room}/")
    connected, _ = communicator.connect()
    assert connected
    return communicator


def test_a_message_reaches_the_room_and_only_the_room(server):
    alice, bob, carol = joined(server, "lobby"), joined(server, "lobby"), joined(server, "other")
    alice.send_json_to({"message": "hello"})
    assert alice.receive_json_from() == {"message": "hello"}
    assert bob.receive_json_from() == {"message": "hello"}
    assert carol.receive_nothing()
    report = server.group_send("{{name}}_other", {"type": "room.message", "message": "from the test"})
    assert report["delivered"] == 1
    assert carol.receive_json_from() == {"message": "from the test"}
    for communicator in (alice, bob, carol):
        communicator.disconnect()
