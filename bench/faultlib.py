"""Shared pieces of the fault scenarios (bench/fault_*.py): a small asyncio
WebSocket client (stdlib only: no third-party client library, so the
scripts run with any Python >= 3.11), process helpers for redis-server and
`switchyard serve`, HTTP probes and machine-load samples.

Times are `time.monotonic()` (CLOCK_MONOTONIC, one clock for every process
of the machine, so worker processes' timestamps compare with the parent's).
"""

import asyncio
import base64
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import time

HOST = "127.0.0.1"


# ------------------------------------------------------------------ machine

def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime is field 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ processes

def start_redis(workdir: str, port: int, *extra: str) -> subprocess.Popen:
    """redis-server on HOST:port, no persistence, its files in workdir;
    returns once it answers PING (or raises)."""
    os.makedirs(workdir, exist_ok=True)
    proc = subprocess.Popen(
        ["redis-server", "--bind", HOST, "--port", str(port), "--dir", workdir,
         "--save", "", "--appendonly", "no", *extra],
        stdout=open(os.path.join(workdir, "redis.log"), "ab"), stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64):
                    return proc
        except OSError:
            time.sleep(0.01)
    proc.kill()
    raise SystemExit(f"redis-server did not start on port {port}")


def redis_cli(port: int, *command: str, password: str | None = None) -> str:
    args = ["redis-cli", "-h", HOST, "-p", str(port)]
    if password:
        args += ["--no-auth-warning", "-a", password]
    return subprocess.run(args + list(command), capture_output=True, text=True).stdout


def start_switchyard(binary: str, plugins: str, workdir: str, name: str, *args: str,
                     env: dict | None = None, config: str | None = None) -> tuple[subprocess.Popen, int, str]:
    """`switchyard serve` on a free port, stdout and stderr to
    workdir/<name>.log; returns (process, port, log path) once it listens."""
    log = os.path.join(workdir, f"{name}.log")
    argv = [binary, "serve", "-b", HOST, "-p", "0", "--plugins", plugins, *args]
    if config:
        argv += ["-c", config]
    proc = subprocess.Popen(
        argv,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=workdir,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open(log, errors="replace") as f:
            text = f.read()
        found = re.search(r"listening on http://[\d.]+:(\d+)", text)
        # Plugins load in the background once bound; wait for them too.
        if found and "plugins loaded" in text:
            return proc, int(found.group(1)), log
        if proc.poll() is not None:
            raise SystemExit(f"switchyard exited with {proc.returncode}; see {log}")
        time.sleep(0.02)
    proc.kill()
    raise SystemExit(f"switchyard did not start; see {log}")


def chat_only_plugins(src_dir: str, workdir: str) -> str:
    """A private plugin directory holding only the chat plugin (a copy, so a
    rebuild of target/plugins cannot hot-swap it mid-run)."""
    dst = os.path.join(workdir, "plugins")
    os.makedirs(dst, exist_ok=True)
    for f in ("chat.wasm", "chat.toml"):
        shutil.copy(os.path.join(src_dir, f), dst)
    return dst


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


# ------------------------------------------------------------------ HTTP

def http_status(port: int, path: str, timeout: float = 1.0) -> int | str:
    """Status of GET path on a fresh connection: an int, or 'refused' /
    'timeout' / 'error'."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            head = b""
            while b"\r\n" not in head:
                chunk = s.recv(256)
                if not chunk:
                    return "error"
                head += chunk
            return int(head.split(b" ", 2)[1])
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "timeout"
    except (OSError, ValueError, IndexError):
        return "error"


async def ahttp_status(port: int, path: str, timeout: float = 1.0) -> int | str:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    except ConnectionRefusedError:
        return "refused"
    except (asyncio.TimeoutError, OSError):
        return "error"
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        return int(line.split(b" ", 2)[1])
    except (asyncio.TimeoutError, OSError, ValueError, IndexError):
        return "error"
    finally:
        writer.close()


# ------------------------------------------------------------------ WebSocket

def _mask(payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    if n == 0:
        return key
    stream = (key * (n // 4 + 1))[:n]
    return key + (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def client_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + _mask(payload)


class WebSocket:
    """One client connection. `texts` collects (monotonic time, payload) of
    every text frame received; `close_code` / `closed_at` are set when the
    server's close frame arrives (`close_code` None and `eof` True when the
    TCP connection ended without one)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.texts: list[tuple[float, bytes]] = []
        self.close_code: int | None = None
        self.close_reason = b""
        self.closed_at: float | None = None
        self.eof = False
        self.on_text = None  # optional callback(time, payload)

    @classmethod
    async def connect(cls, port: int, path: str, timeout: float = 10.0) -> "WebSocket":
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, port, limit=1 << 20), timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            writer.close()
            raise ConnectionError(f"handshake answered {status}")
        return cls(reader, writer)

    def send_text(self, text: str) -> None:
        self.writer.write(client_frame(0x1, text.encode()))

    async def run(self) -> None:
        """Reads frames until the server's close frame (answered) or EOF."""
        buf = bytearray()
        reader = self.reader
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    self.eof = True
                    self.closed_at = time.monotonic()
                    return
                now = time.monotonic()
                buf += data
                pos = 0
                end = len(buf)
                while end - pos >= 2:
                    b0, b1 = buf[pos], buf[pos + 1]
                    n = b1 & 0x7F
                    hl = 2
                    if n == 126:
                        if end - pos < 4:
                            break
                        n = int.from_bytes(buf[pos + 2:pos + 4], "big")
                        hl = 4
                    elif n == 127:
                        if end - pos < 10:
                            break
                        n = int.from_bytes(buf[pos + 2:pos + 10], "big")
                        hl = 10
                    if b1 & 0x80:
                        hl += 4  # a server never masks; tolerated anyway
                    if end - pos < hl + n:
                        break
                    payload = bytes(buf[pos + hl:pos + hl + n])
                    pos += hl + n
                    op = b0 & 0x0F
                    if op == 0x1:
                        self.texts.append((now, payload))
                        if self.on_text:
                            self.on_text(now, payload)
                    elif op == 0x8:
                        self.close_code = int.from_bytes(payload[:2], "big") if n >= 2 else 1005
                        self.close_reason = payload[2:]
                        self.closed_at = now
                        try:
                            self.writer.write(client_frame(0x8, payload[:2]))
                            self.writer.close()
                        except OSError:
                            pass
                        return
                    elif op == 0x9:
                        self.writer.write(client_frame(0xA, payload))
                del buf[:pos]
        except (ConnectionError, OSError):
            self.eof = True
            self.closed_at = time.monotonic()
