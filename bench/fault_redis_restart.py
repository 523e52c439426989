#!/usr/bin/env python3
"""A Redis restart under traffic (issue 11, scenario 2): which group sends
fail visibly, and which are told Ok but miss members.

A private redis-server on a free loopback port (own directory, no
persistence), two `switchyard serve` processes on it (Redis layer, the chat
plugin alone, one worker thread each, RUST_LOG=info), MEMBERS chat sockets
in one room (ws/chat/lobby/) split evenly across the two, and one publisher
socket on the first process (a member of the room too) sending
{"message": seq} at RATE messages/s for the whole run. After BEFORE seconds
redis-server is killed (SIGKILL); OUTAGE seconds later it is started again
on the same port, empty; the run goes on for AFTER seconds more.

    python3 bench/fault_redis_restart.py target/release/switchyard target/plugins

Knobs (environment): MEMBERS=50 RATE=20 BEFORE=5 OUTAGE=10 AFTER=10.
Prints a table and writes bench/results/fault-redis-restart.json (fault-redis-restart-$TAG.json when TAG is set).

A send failed visibly when the publisher got the chat plugin's error frame
{"error": "group_send_failed", "detail": ...}; it succeeded when any socket
got it (the publisher's own echo comes from its process's membership map,
whatever Redis holds). Error frames carry no sequence number: they are
matched, in order, to the sequence numbers the publisher never got back (the
table says if the two counts differ). A send is lost with no error when it
succeeded but reached fewer than all MEMBERS. Sends are put in a phase by
the time the publisher wrote them: before the kill, during the outage (kill
to the restarted Redis answering PING), the first 2 s after that, and after.
Needs only the Python standard library (and redis-server on PATH).
"""

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib as fl  # noqa: E402

MEMBERS = int(os.environ.get("MEMBERS", 50))
RATE = float(os.environ.get("RATE", 20))
BEFORE = float(os.environ.get("BEFORE", 5))
OUTAGE = float(os.environ.get("OUTAGE", 10))
AFTER = float(os.environ.get("AFTER", 10))
PHASES = ("before", "outage", "first_2s_after", "after")


async def run(binary: str, plugin_src: str) -> dict:
    workdir = tempfile.mkdtemp(prefix="fault-redis-restart-")
    plugins = fl.chat_only_plugins(plugin_src, workdir)
    rport = fl.free_port()
    redis_dir = os.path.join(workdir, "redis")
    redis = fl.start_redis(redis_dir, rport)
    url = f"redis://127.0.0.1:{rport}"
    servers = []
    try:
        for name in ("a", "b"):
            proc, port, log = fl.start_switchyard(
                binary, plugins, workdir, name, "--redis-url", url, "--workers", "1",
                env={"RUST_LOG": "info"})
            servers.append((proc, port, log))
        (_, port_a, _), (_, port_b, _) = servers
        members = []
        for i in range(MEMBERS):
            port = port_a if i % 2 == 0 else port_b
            members.append(("a" if port == port_a else "b", await fl.WebSocket.connect(port, "/ws/chat/lobby/")))
        pub = await fl.WebSocket.connect(port_a, "/ws/chat/lobby/")
        tasks = [asyncio.create_task(ws.run()) for _, ws in members] + [asyncio.create_task(pub.run())]
        await asyncio.sleep(1.0)

        readyz = []  # (t, "a"/"b", status)
        stop_probe = asyncio.Event()

        async def probe():
            while not stop_probe.is_set():
                for name, port in (("a", port_a), ("b", port_b)):
                    readyz.append((time.monotonic(), name, await fl.ahttp_status(port, "/readyz")))
                await asyncio.sleep(0.1)

        sent = []  # (seq, t_send)
        stop_pub = asyncio.Event()

        async def publish():
            start = time.monotonic()
            seq = 0
            while not stop_pub.is_set():
                pub.send_text(json.dumps({"message": seq}))
                sent.append((seq, time.monotonic()))
                seq += 1
                delay = start + seq / RATE - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)

        loads = {"start": fl.loadavg()}
        t0 = time.monotonic()
        prober = asyncio.create_task(probe())
        publisher = asyncio.create_task(publish())
        await asyncio.sleep(BEFORE)
        loads["at_kill"] = fl.loadavg()
        t_kill = time.monotonic()
        redis.send_signal(signal.SIGKILL)
        redis.wait()
        await asyncio.sleep(OUTAGE - (time.monotonic() - t_kill))
        t_restart = time.monotonic()
        loop = asyncio.get_running_loop()
        redis = await loop.run_in_executor(None, fl.start_redis, redis_dir, rport)
        t_up = time.monotonic()
        loads["at_restart"] = fl.loadavg()
        await asyncio.sleep(AFTER)
        stop_pub.set()
        await publisher
        t_stop = time.monotonic()
        await asyncio.sleep(4.0)  # sends in flight (a send may wait up to 3 s)
        stop_probe.set()
        await prober
        loads["end"] = fl.loadavg()
        cpu = {name: fl.cpu_seconds(proc.pid) for name, (proc, _, _) in zip("ab", servers)}
        log_lines = {name: sum(1 for _ in open(log, errors="replace")) for name, (_, _, log) in zip("ab", servers)}
        closed = {}
        for _, ws in members + [("a", pub)]:
            key = str(ws.close_code) if ws.close_code is not None else ("eof" if ws.eof else "open")
            closed[key] = closed.get(key, 0) + 1
        for t in tasks:
            t.cancel()
        for proc, _, log in servers:
            shutil.copy(log, os.path.join(tempfile.gettempdir(), f"fault-redis-restart-{os.path.basename(log)}"))
    finally:
        for proc, _, _ in servers:
            fl.stop(proc)
        fl.stop(redis)
        shutil.rmtree(workdir, ignore_errors=True)

    # ------------------------------------------------------------ analysis
    def phase(t):
        if t < t_kill:
            return "before"
        if t < t_up:
            return "outage"
        if t < t_up + 2.0:
            return "first_2s_after"
        return "after"

    echoes, errors, other = {}, [], 0
    for t, payload in pub.texts:
        data = json.loads(payload)
        if "message" in data:
            echoes[data["message"]] = t
        elif data.get("error") == "group_send_failed":
            errors.append((t, data.get("detail", "")))
        else:
            other += 1
    reach = {}  # seq -> {"a": n, "b": n}
    for name, ws in members:
        for _, payload in ws.texts:
            data = json.loads(payload)
            if "message" in data:
                reach.setdefault(data["message"], {"a": 0, "b": 0})[name] += 1
    per_side = MEMBERS // 2 + MEMBERS % 2, MEMBERS // 2
    total_reach = {seq: r["a"] + r["b"] for seq, r in reach.items()}
    # A failed send reached nobody, the publisher included.
    unanswered = [seq for seq, _ in sent if seq not in echoes and total_reach.get(seq, 0) == 0]
    failed_seqs = set(unanswered[:len(errors)])
    details = {}
    for t, d in errors:
        d = d if len(d) < 160 else d[:160]
        details[d] = details.get(d, 0) + 1
    table = {p: {"sent": 0, "failed": 0, "succeeded": 0, "reached_all": 0, "reached_some": 0,
                 "reached_none": 0, "no_answer": 0, "lost_no_error": 0, "no_echo_to_sender": 0,
                 "held_over_1s": 0} for p in PHASES}
    lost_list = []
    for seq, t in sent:
        row = table[phase(t)]
        row["sent"] += 1
        got = reach.get(seq, {"a": 0, "b": 0})
        n = got["a"] + got["b"]
        if seq in echoes or n > 0:
            row["succeeded"] += 1
            if seq not in echoes:
                row["no_echo_to_sender"] += 1
            elif echoes[seq] - t > 1.0:
                row["held_over_1s"] += 1
            if n == MEMBERS:
                row["reached_all"] += 1
            else:
                row["lost_no_error"] += 1
                row["reached_some" if n else "reached_none"] += 1
                lost_list.append({"seq": seq, "phase": phase(t), "sent_s": t - t_kill,
                                  "reached_a": got["a"], "reached_b": got["b"],
                                  "echo_after_s": (echoes[seq] - t) if seq in echoes else None})
        elif seq in failed_seqs:
            row["failed"] += 1
        else:
            row["no_answer"] += 1
    error_times = [round(t - t_kill, 3) for t, _ in errors]
    err_at = dict(zip(unanswered, (t for t, _ in errors)))
    # One row per send: [seq, sent (s since kill), outcome, answer after (s), members reached]
    per_send = []
    for seq, t in sent:
        n = total_reach.get(seq, 0)
        if seq in echoes:
            per_send.append([seq, round(t - t_kill, 3), "ok", round(echoes[seq] - t, 3), n])
        elif seq in err_at:
            per_send.append([seq, round(t - t_kill, 3), "error", round(err_at[seq] - t, 3), n])
        else:
            per_send.append([seq, round(t - t_kill, 3), "ok-no-echo" if n else "none", None, n])
    # readiness timeline: transitions per process
    transitions = {"a": [], "b": []}
    last = {}
    for t, name, st in readyz:
        if last.get(name) != st:
            transitions[name].append((round(t - t_kill, 3), st))
            last[name] = st
    latencies = [echoes[seq] - t for seq, t in sent if seq in echoes]
    slow = [{"seq": seq, "sent_s": round(t - t_kill, 3), "echo_after_s": round(echoes[seq] - t, 3)}
            for seq, t in sent if seq in echoes and echoes[seq] - t > 0.5]
    return {
        "scenario": "redis-restart",
        "binary": os.path.abspath(binary),
        "config": {"members": MEMBERS, "members_per_process": per_side, "rate": RATE,
                   "before_s": BEFORE, "outage_s": OUTAGE, "after_s": AFTER,
                   "redis_stop": "SIGKILL", "workers_per_process": 1, "RUST_LOG": "info"},
        "timeline_s": {"kill": 0.0, "restart_started": t_restart - t_kill, "redis_up": t_up - t_kill,
                       "publisher_start": t0 - t_kill, "publisher_stop": t_stop - t_kill},
        "loadavg": loads,
        "sent": len(sent), "error_frames": len(errors), "error_details": details,
        "error_frames_at_s_since_kill": [error_times[0], error_times[-1]] if error_times else None,
        "sends_reaching_nobody": len(unanswered), "other_frames": other,
        "errors_match_sends_reaching_nobody": len(errors) == len(unanswered),
        "phases": table,
        "lost_no_error": lost_list,
        "echo_latency_s": {"max": max(latencies) if latencies else None},
        "sends_slower_than_500ms": slow[:40],
        "readyz_transitions_s_since_kill": transitions,
        "per_send": per_send,
        "socket_states_at_end": closed,
        "server_cpu_s": cpu, "server_log_lines": log_lines,
    }


def main() -> None:
    binary, plugins = sys.argv[1], sys.argv[2]
    fl.raise_nofile()
    out = asyncio.run(run(binary, plugins))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "fault-redis-restart" + (f"-{os.environ['TAG']}" if os.environ.get("TAG") else "") + ".json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    cols = ("sent", "failed", "succeeded", "reached_all", "reached_some", "reached_none", "no_answer",
            "no_echo_to_sender", "held_over_1s")
    print(f"{'phase (by send time)':<22}" + "".join(f"{c:>18}" for c in cols))
    for p in PHASES:
        row = out["phases"][p]
        print(f"{p:<22}" + "".join(f"{row[c]:>18}" for c in cols))
    tot = {c: sum(out["phases"][p][c] for p in PHASES) for c in cols}
    print(f"{'total':<22}" + "".join(f"{tot[c]:>18}" for c in cols))
    tl = out["timeline_s"]
    print(f"redis killed at 0 s, answering again at {tl['redis_up']:.2f} s; "
          f"error frames {out['error_frames']} (at {out['error_frames_at_s_since_kill']} s), sends that reached "
          f"nobody {out['sends_reaching_nobody']} (match: {out['errors_match_sends_reaching_nobody']}); "
          f"slowest echo {out['echo_latency_s']['max']:.2f} s")
    print(f"error details: {json.dumps(out['error_details'])}")
    print(f"readyz transitions (s since kill): {json.dumps(out['readyz_transitions_s_since_kill'])}")
    print(f"sockets at end: {json.dumps(out['socket_states_at_end'])}; server log lines {out['server_log_lines']}")
    print(f"loadavg: {json.dumps(out['loadavg'])}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
