"""Testing a plugin from pytest, in the shape of Channels' ``WebsocketCommunicator``
(``channels.testing``): a real ``switchyard`` process and real WebSocket clients.

Runs on the test's side (CPython with ``websockets``), never inside a
component. ``SwitchyardServer`` starts a real ``switchyard`` process on
``127.0.0.1:0`` serving a plugin directory on the in-memory channel layer,
with an admin token so that tests can publish to groups::

    from switchyard_testing import SwitchyardServer, WebsocketCommunicator

    @pytest.fixture(scope="module")
    def server():
        with SwitchyardServer(plugins="path/to/plugins") as server:
            yield server

    def test_chat(server):
        communicator = WebsocketCommunicator(server, "/ws/chat-py/lobby/")
        connected, _ = communicator.connect()
        assert connected
        communicator.send_json_to({"message": "hi"})
        assert communicator.receive_json_from() == {"message": "hi"}
        server.group_send("chat_lobby", {"type": "chat.message", "message": "x"})
        communicator.disconnect()

The binary is ``SWITCHYARD_BIN`` or ``switchyard`` on ``PATH``; the plugin
directory defaults to ``SWITCHYARD_PLUGINS``. Unlike Channels' async
communicator these methods are plain calls (no event loop needed).
"""

import json
import os
import queue
import secrets
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

# How a server says where it listens, on its standard output.
_LISTENING = "Switchyard listening on http://"


class SwitchyardServer:
    """A ``switchyard serve`` process on a free loopback port (a context manager)."""

    def __init__(self, plugins=None, binary=None, args=(), start_timeout=300.0):
        self.plugins = plugins or os.environ.get("SWITCHYARD_PLUGINS")
        if not self.plugins:
            raise ValueError("no plugin directory: pass plugins= or set SWITCHYARD_PLUGINS")
        if not os.path.isdir(self.plugins):
            raise ValueError(f"plugin directory {self.plugins!r} does not exist")
        self.binary = binary or os.environ.get("SWITCHYARD_BIN") or shutil.which("switchyard")
        if not self.binary:
            raise FileNotFoundError(
                "switchyard binary not found: set SWITCHYARD_BIN or put switchyard on PATH"
            )
        self.args = list(args)
        self.start_timeout = start_timeout
        self.token = secrets.token_hex(16)
        self.address = None
        self.output = []
        self._process = None

    def start(self):
        """Starts the server and waits until it says where it listens."""
        env = dict(os.environ, NO_COLOR="1")
        env.setdefault("RUST_LOG", "warn")
        self._process = subprocess.Popen(
            [self.binary, "serve", "-b", "127.0.0.1", "-p", "0", "--plugins", self.plugins,
             "--admin-token", self.token, *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        found = queue.Queue()

        def read():
            for line in self._process.stdout:
                self.output.append(line)
                if line.startswith(_LISTENING):
                    found.put(line[len(_LISTENING):].split()[0])
            found.put(None)

        threading.Thread(target=read, daemon=True).start()
        try:
            self.address = found.get(timeout=self.start_timeout)
        except queue.Empty:
            self.address = None
        if self.address is None:
            self.stop()
            raise RuntimeError(
                "switchyard did not start listening; its output:\n" + "".join(self.output)
            )
        return self

    def stop(self):
        """Stops the server (SIGTERM, then SIGKILL after 10 s)."""
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def url(self, path):
        """The ``ws://`` URL of ``path`` on this server."""
        return f"ws://{self.address}{path}"

    def _publish(self, endpoint, body):
        request = urllib.request.Request(
            f"http://{self.address}/_switchyard/{endpoint}",
            data=json.dumps(body).encode(),
            headers={"authorization": f"Bearer {self.token}", "content-type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"{endpoint} answered {err.code}: {err.read().decode()}") from None

    def group_send(self, group, event):
        """Publishes ``event`` to ``group`` (``POST /_switchyard/group-send``);
        returns ``{"delivered": n, "over_capacity": m}``."""
        return self._publish("group-send", {"group": group, "event": event})

    def send(self, channel, event):
        """Publishes ``event`` to one channel (``POST /_switchyard/send``)."""
        return self._publish("send", {"channel": channel, "event": event})


class WebsocketCommunicator:
    """One WebSocket client of a ``SwitchyardServer``, with Channels' communicator methods."""

    def __init__(self, server, path, subprotocols=None, headers=None):
        self.server = server
        self.path = path
        self.subprotocols = subprotocols
        self.headers = headers
        self._ws = None
        self.close_code = None

    def connect(self, timeout=60):
        """Connects; returns ``(True, subprotocol)``, or ``(False, status)`` when the
        handshake is refused (e.g. 403). A 503 (a plugin still loading) is retried
        until ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._ws = ws_connect(
                    self.server.url(self.path),
                    subprotocols=self.subprotocols,
                    additional_headers=self.headers,
                    open_timeout=timeout,
                    max_size=None,
                )
                return True, self._ws.subprotocol
            except InvalidStatus as err:
                status = err.response.status_code
                if status != 503 or time.monotonic() > deadline:
                    return False, status
                time.sleep(0.2)

    def send_to(self, text_data=None, bytes_data=None):
        """Sends a text or a binary frame."""
        self._ws.send(text_data if text_data is not None else bytes_data)

    def send_json_to(self, data):
        """Sends ``data`` as a JSON text frame."""
        self.send_to(text_data=json.dumps(data))

    def receive_from(self, timeout=5):
        """The next frame (``str`` or ``bytes``); ``TimeoutError`` after ``timeout`` s."""
        return self._ws.recv(timeout=timeout)

    def receive_json_from(self, timeout=5):
        """The next frame, a text frame, decoded as JSON."""
        frame = self.receive_from(timeout)
        if not isinstance(frame, str):
            raise AssertionError(f"expected a text frame, got {frame!r}")
        return json.loads(frame)

    def receive_nothing(self, timeout=0.1):
        """True when no frame arrives within ``timeout`` seconds."""
        try:
            self._ws.recv(timeout=timeout)
        except TimeoutError:
            return True
        except ConnectionClosed:
            return True
        return False

    def receive_close(self, timeout=5):
        """Waits for the server to close; returns its close code."""
        try:
            while True:
                self._ws.recv(timeout=timeout)
        except ConnectionClosed as closed:
            self.close_code = closed.rcvd.code if closed.rcvd else 1006
            return self.close_code

    def disconnect(self, code=1000):
        """Closes the connection and waits for the server's answer."""
        if self._ws is not None:
            self._ws.close(code)
