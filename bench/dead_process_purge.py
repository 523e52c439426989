"""How long after `kill -9` a Switchyard process's group members are gone.

Starts redis-server on a unix socket, two `switchyard serve` processes on it
(with the test plugins), joins a chat client on the second, kills that one
with SIGKILL and polls `ZRANGE asgi:group:chat_lobby` until its member has
been removed by the live process. Prints the time; not a timed test.

    python3 bench/dead_process_purge.py target/debug/switchyard target/test-plugins [HEARTBEAT_TTL_SECS]

Needs redis-server and redis-cli on PATH.
"""

import base64
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def main() -> None:
    binary, plugins = sys.argv[1], sys.argv[2]
    ttl = sys.argv[3] if len(sys.argv) > 3 else None
    workdir = tempfile.mkdtemp(prefix="purge-bench-")
    sock = os.path.join(workdir, "redis.sock")
    redis = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    children = [redis]
    try:
        while not os.path.exists(sock):
            time.sleep(0.01)
        args = []
        if ttl:
            config = os.path.join(workdir, "switchyard.toml")
            with open(config, "w") as f:
                f.write(f"[redis]\nheartbeat-ttl-secs = {ttl}\n")
            args = ["-c", config]

        def rcli(*command: str) -> list[str]:
            out = subprocess.run(["redis-cli", "-s", sock, *command], capture_output=True, text=True)
            return out.stdout.split()

        def start() -> int:
            child = subprocess.Popen(
                [binary, "serve", "-b", "127.0.0.1", "-p", "0", "--plugins", plugins, *args],
                env={**os.environ, "REDIS_URL": "unix://" + sock, "RUST_LOG": "warn", "NO_COLOR": "1"},
                stdout=subprocess.PIPE,
                text=True,
            )
            children.append(child)
            port = None
            for line in child.stdout:
                found = re.search(r"listening on http://[\d.]+:(\d+)", line)
                if found:
                    port = int(found.group(1))
                # Plugins load in the background once bound; wait for them too.
                if port is not None and "plugins loaded" in line:
                    return port
            raise SystemExit("switchyard did not start")

        start()
        port = start()
        doomed = children[-1]
        ws = socket.create_connection(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        ws.sendall(
            (
                "GET /ws/chat/lobby/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        assert b" 101 " in ws.recv(1024)
        while not rcli("ZRANGE", "asgi:group:chat_lobby", "0", "-1"):
            time.sleep(0.05)
        time.sleep(1)  # let both processes beat and sweep once
        doomed.kill()
        killed = time.monotonic()
        while rcli("ZRANGE", "asgi:group:chat_lobby", "0", "-1"):
            time.sleep(0.05)
        print(
            f"heartbeat-ttl-secs = {ttl or '10 (default)'}: "
            f"member removed {time.monotonic() - killed:.2f} s after kill -9"
        )
    finally:
        for child in children:
            child.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
