#!/usr/bin/env python3
"""A Redis that answers but refuses every command (issue 11, scenario 3):
what an idle server costs it and itself.

For each case a private redis-server on a free loopback port and one idle
`switchyard serve` (Redis layer, the chat plugin alone, RUST_LOG=info, the
default, so the log volume is what an operator gets) pointed at it:

    noauth    redis-server --requirepass secret, URL without the password
              (every command answers NOAUTH)
    readonly  redis-server --replicaof 127.0.0.1 <a closed port>: a replica
              whose master never answers (every write answers READONLY)
    healthy   a plain redis-server (control)

After the server listens and SETTLE seconds have passed, it measures over
SECS seconds: new connections per second to Redis (INFO stats
total_connections_received delta, less the redis-cli connections of the
samples themselves), server log lines per second (lines its stdout+stderr
got), server CPU (utime+stime delta from /proc/<pid>/stat, % of one core),
and at the end GET /readyz and a chat handshake.

    python3 bench/fault_redis_refuses.py target/release/switchyard target/plugins

Knobs (environment): SECS=30 SETTLE=2 CASES="noauth readonly healthy".
Prints a table and writes bench/results/fault-redis-refuses.json. Needs
redis-server and redis-cli on PATH; only the Python standard library.
"""

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib as fl  # noqa: E402

SECS = float(os.environ.get("SECS", 30))
SETTLE = float(os.environ.get("SETTLE", 2))
CASES = os.environ.get("CASES", "noauth readonly healthy").split()
SAMPLES = 6  # INFO samples over the window (each is one more connection)


def connections(port: int, password: str | None) -> int:
    for line in fl.redis_cli(port, "INFO", "stats", password=password).splitlines():
        if line.startswith("total_connections_received:"):
            return int(line.split(":")[1])
    raise SystemExit(f"no INFO stats from redis on {port}")


def run_case(case: str, binary: str, plugin_src: str) -> dict:
    workdir = tempfile.mkdtemp(prefix=f"fault-redis-{case}-")
    plugins = fl.chat_only_plugins(plugin_src, workdir)
    rport = fl.free_port()
    password = None
    extra: list[str] = []
    if case == "noauth":
        password = "secret"
        extra = ["--requirepass", password]
    elif case == "readonly":
        extra = ["--replicaof", fl.HOST, str(fl.free_port())]
    redis = fl.start_redis(os.path.join(workdir, "redis"), rport, *extra)
    server = None
    try:
        probe = fl.redis_cli(rport, "SET", "probe", "1").strip()
        server, port, log = fl.start_switchyard(
            binary, plugins, workdir, "switchyard", "--redis-url", f"redis://127.0.0.1:{rport}",
            env={"RUST_LOG": "info"})
        time.sleep(SETTLE)
        load_start = fl.loadavg()
        samples = []  # (t, connections, log lines, cpu s)

        def sample():
            c = connections(rport, password)
            with open(log, errors="replace") as f:
                lines = sum(1 for _ in f)
            samples.append((time.monotonic(), c, lines, fl.cpu_seconds(server.pid)))

        sample()
        t_end = samples[0][0] + SECS
        for k in range(1, SAMPLES + 1):
            time.sleep(max(0.0, samples[0][0] + k * SECS / SAMPLES - time.monotonic()))
            sample()
        load_end = fl.loadavg()
        ready = fl.http_status(port, "/readyz")

        async def handshake():
            try:
                ws = await fl.WebSocket.connect(port, "/ws/chat/lobby/")
                ws.writer.close()
                return 101
            except ConnectionError as err:
                return str(err)

        ws_status = asyncio.run(handshake())
        alive = server.poll() is None
        (t0, c0, l0, cpu0), (t1, c1, l1, cpu1) = samples[0], samples[-1]
        dt = t1 - t0
        own = len(samples) - 1  # redis-cli's own connections inside the delta
        per_window = []
        for (ta, ca, la, pa), (tb, cb, lb, pb) in zip(samples, samples[1:]):
            d = tb - ta
            per_window.append({"conn_per_s": round((cb - ca - 1) / d, 1),
                               "log_lines_per_s": round((lb - la) / d, 1),
                               "cpu_pct": round(100 * (pb - pa) / d, 1)})
        with open(log, errors="replace") as f:
            tail = [line.rstrip()[:300] for line in f][-3:]
        shutil.copy(log, os.path.join(tempfile.gettempdir(), f"fault-redis-{case}-server.log"))
        return {
            "case": case, "redis_args": extra, "redis_answers_set": probe,
            "window_s": round(dt, 2),
            "redis_conn_per_s": round((c1 - c0 - own) / dt, 1),
            "log_lines_per_s": round((l1 - l0) / dt, 1),
            "cpu_pct_of_one_core": round(100 * (cpu1 - cpu0) / dt, 1),
            "per_window": per_window,
            "log_lines_total": l1,
            "readyz": ready, "chat_handshake": ws_status, "server_alive": alive,
            "loadavg": {"start": load_start, "end": load_end},
            "log_tail": tail,
        }
    finally:
        if server:
            fl.stop(server)
        fl.stop(redis)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    binary, plugins = sys.argv[1], sys.argv[2]
    results = []
    for case in CASES:
        print(f"{case}: {SECS:g} s ...", file=sys.stderr)
        results.append(run_case(case, binary, plugins))
    out = {"scenario": "redis-refuses-commands", "binary": os.path.abspath(binary),
           "config": {"secs": SECS, "settle_s": SETTLE, "RUST_LOG": "info", "workers": "default (one per core)"},
           "cases": results}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "fault-redis-refuses.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    head = ("case", "redis conn/s", "log lines/s", "CPU % core", "/readyz", "handshake", "loadavg start -> end")
    print(f"{head[0]:<10}{head[1]:>14}{head[2]:>13}{head[3]:>12}{head[4]:>9}  {head[5]:<26}{head[6]}")
    for r in results:
        print(f"{r['case']:<10}{r['redis_conn_per_s']:>14}{r['log_lines_per_s']:>13}{r['cpu_pct_of_one_core']:>12}"
              f"{str(r['readyz']):>9}  {str(r['chat_handshake']):<26}{r['loadavg']['start']} -> {r['loadavg']['end']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
