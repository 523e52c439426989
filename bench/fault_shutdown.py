#!/usr/bin/env python3
"""Shutdown with traffic (issue 11, scenario 1): what SIGTERM does to
sockets that are receiving group messages.

One `switchyard serve` (in-memory layer, the chat plugin alone, RUST_LOG=warn),
SOCKETS chat sockets spread over ROOMS rooms (ws/chat/room<i>/), plus one
publisher socket per room (a member of its room too) sending {"message": seq}
round-robin over the rooms at RATE messages/s in total. After WARMUP seconds
of traffic the server gets SIGTERM. Every socket records each text frame it
received before the server's close frame and the close code; a prober polls
GET /readyz and GET /healthz on fresh connections every few ms from a second
before the signal until the process has exited.

    python3 bench/fault_shutdown.py target/release/switchyard target/plugins

Knobs (environment): SOCKETS=1000 ROOMS=10 RATE=200 WARMUP=5 CLIENT_PROCS=2.
Prints a table and writes bench/results/fault-shutdown.json (fault-shutdown-$TAG.json when TAG is set).

Accepted messages are the sequence numbers any member (the publisher's echo
included) received: group sends the server performed. A message is lost when
it was accepted but some connected member of its room closed (1001) without
it. Clients are plain asyncio (faultlib.WebSocket), split over CLIENT_PROCS
processes so they keep up with RATE x (room size) frames/s; the lag columns
show whether they did. Needs only the Python standard library.
"""

import asyncio
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib as fl  # noqa: E402

SOCKETS = int(os.environ.get("SOCKETS", 1000))
ROOMS = int(os.environ.get("ROOMS", 10))
RATE = float(os.environ.get("RATE", 200))
WARMUP = float(os.environ.get("WARMUP", 5))
CLIENT_PROCS = int(os.environ.get("CLIENT_PROCS", 2))
DEADLINE = 40.0  # seconds a client waits for its sockets to close


def seqs_of(texts):
    out = []
    errors = 0
    for t, payload in texts:
        data = json.loads(payload)
        if "message" in data:
            out.append((t, data["message"]))
        else:
            errors += 1
    return out, errors


async def _listen(port, assignments, pipe):
    sem = asyncio.Semaphore(50)
    sockets = {}
    failed = []

    async def one(idx, room):
        async with sem:
            try:
                sockets[idx] = (room, await fl.WebSocket.connect(port, f"/ws/chat/room{room}/"))
            except Exception as err:  # noqa: BLE001 - recorded, not raised
                failed.append((idx, repr(err)))

    await asyncio.gather(*(one(i, r) for i, r in assignments))
    tasks = [asyncio.create_task(ws.run()) for _, ws in sockets.values()]
    pipe.send(("ready", len(sockets), failed))
    await asyncio.wait(tasks, timeout=DEADLINE + WARMUP + 10)
    result = []
    for idx, (room, ws) in sockets.items():
        got, errors = seqs_of(ws.texts)
        result.append({"idx": idx, "room": room, "code": ws.close_code, "eof": ws.eof,
                       "closed_at": ws.closed_at, "got": got, "errors": errors})
    pipe.send(("done", result))


def listener(port, assignments, pipe):
    fl.raise_nofile()
    asyncio.run(_listen(port, assignments, pipe))


async def _publish(port, pipe):
    pubs = {}
    for room in range(ROOMS):
        pubs[room] = await fl.WebSocket.connect(port, f"/ws/chat/room{room}/")
    tasks = [asyncio.create_task(ws.run()) for ws in pubs.values()]
    pipe.send(("ready", len(pubs), []))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, pipe.recv)  # "go"
    sent = []  # (seq, room, t_send)
    start = time.monotonic()
    seq = 0
    while True:
        room = seq % ROOMS
        ws = pubs[room]
        if all(p.closed_at is not None for p in pubs.values()):
            break
        if ws.closed_at is None:
            try:
                ws.send_text(json.dumps({"message": seq}))
                sent.append((seq, room, time.monotonic()))
            except (ConnectionError, OSError):
                pass
        seq += 1
        delay = start + seq / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if time.monotonic() - start > DEADLINE + WARMUP:
            break
    await asyncio.wait(tasks, timeout=DEADLINE)
    result = []
    for room, ws in pubs.items():
        got, errors = seqs_of(ws.texts)
        result.append({"idx": f"pub{room}", "room": room, "code": ws.close_code, "eof": ws.eof,
                       "closed_at": ws.closed_at, "got": got, "errors": errors})
    pipe.send(("done", result, sent))


def publisher(port, pipe):
    asyncio.run(_publish(port, pipe))


def prober(port, path, stop_evt, out):
    while not stop_evt.is_set():
        t = time.monotonic()
        status = fl.http_status(port, path, timeout=0.5)
        out.append((t, time.monotonic(), path, status))
        time.sleep(0.002)


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def main() -> None:
    binary, plugin_src = sys.argv[1], sys.argv[2]
    fl.raise_nofile()
    workdir = tempfile.mkdtemp(prefix="fault-shutdown-")
    plugins = fl.chat_only_plugins(plugin_src, workdir)
    load_before = fl.loadavg()
    server, port, log = fl.start_switchyard(binary, plugins, workdir, "switchyard",
                                            env={"RUST_LOG": "warn"})
    ctx = mp.get_context("fork")
    procs = []
    try:
        # Listeners, CLIENT_PROCS processes.
        pipes = []
        for k in range(CLIENT_PROCS):
            assignments = [(i, i % ROOMS) for i in range(k, SOCKETS, CLIENT_PROCS)]
            parent, child = ctx.Pipe()
            p = ctx.Process(target=listener, args=(port, assignments, child), daemon=True)
            p.start()
            procs.append(p)
            pipes.append(parent)
        connected, failed = 0, []
        for pipe in pipes:
            _, n, f = pipe.recv()
            connected += n
            failed += f
        pub_parent, pub_child = ctx.Pipe()
        pub = ctx.Process(target=publisher, args=(port, pub_child), daemon=True)
        pub.start()
        procs.append(pub)
        pub_parent.recv()
        print(f"{connected} listeners and {ROOMS} publishers connected ({len(failed)} failed); "
              f"traffic for {WARMUP:g} s at {RATE:g} msg/s", file=sys.stderr)
        pub_parent.send("go")
        time.sleep(max(0.0, WARMUP - 1.0))
        probes = []
        stop_evt = threading.Event()
        ths = [threading.Thread(target=prober, args=(port, path, stop_evt, probes), daemon=True)
               for path in ("/readyz", "/healthz")]
        for th in ths:
            th.start()
        time.sleep(min(1.0, WARMUP))
        load_at_signal = fl.loadavg()
        cpu_before = fl.cpu_seconds(server.pid)
        t_signal = time.monotonic()
        server.send_signal(signal.SIGTERM)
        # One probe straight after the signal, from this thread.
        t = time.monotonic()
        status = fl.http_status(port, "/readyz", timeout=0.5)
        probes.append((t, time.monotonic(), "/readyz", status))
        try:
            server.wait(timeout=DEADLINE)
        except Exception:  # noqa: BLE001
            server.kill()
            server.wait()
        t_exit = time.monotonic()
        time.sleep(0.05)
        stop_evt.set()
        for th in ths:
            th.join()
        results = []
        for pipe in pipes:
            if pipe.poll(DEADLINE + 20):
                results += pipe.recv()[1]
        pub_results, sent = [], []
        if pub_parent.poll(DEADLINE + 20):
            _, pub_results, sent = pub_parent.recv()
        load_after = fl.loadavg()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        fl.stop(server)

    # ------------------------------------------------------------ analysis
    everyone = results + pub_results
    members = {r: [s for s in everyone if s["room"] == r] for r in range(ROOMS)}
    sent_at = {seq: t for seq, _, t in sent}
    room_of = {seq: room for seq, room, _ in sent}
    receivers = {}
    for s in everyone:
        for _, seq in s["got"]:
            receivers.setdefault(seq, set()).add(s["idx"])
    accepted = sorted(receivers)
    lost = [seq for seq in accepted if len(receivers[seq]) < len(members[room_of[seq]])]
    close_at = {s["idx"]: s["closed_at"] for s in everyone}
    got_at = {}
    for s in everyone:
        for t, seq in s["got"]:
            got_at.setdefault(seq, []).append(t)
    lost_detail = []
    for seq in lost[:20]:
        missed = [s["idx"] for s in members[room_of[seq]] if s["idx"] not in receivers[seq]]
        lost_detail.append({
            "seq": seq, "room": room_of[seq], "sent_s": sent_at[seq] - t_signal,
            "receivers": len(receivers[seq]), "members": len(members[room_of[seq]]),
            "first_received_s": min(got_at[seq]) - t_signal,
            "missed_by_closed_at_s": sorted(close_at[i] - t_signal for i in missed)[:5],
            "publisher_got_it": f"pub{room_of[seq]}" in receivers[seq],
        })
    lost_sent_before = [seq for seq in lost if sent_at[seq] < t_signal]
    missing_deliveries = sum(len(members[room_of[seq]]) - len(receivers[seq]) for seq in lost)
    sent_before = [seq for seq, _, t in sent if t < t_signal]
    sent_before_not_accepted = [seq for seq in sent_before if seq not in receivers]
    accepted_after_signal_send = [seq for seq in accepted if sent_at[seq] >= t_signal]
    codes = {}
    for s in results:
        key = str(s["code"]) if s["code"] is not None else ("eof" if s["eof"] else "open")
        codes[key] = codes.get(key, 0) + 1
    pub_codes = {}
    for s in pub_results:
        key = str(s["code"]) if s["code"] is not None else ("eof" if s["eof"] else "open")
        pub_codes[key] = pub_codes.get(key, 0) + 1
    closes = [s["closed_at"] - t_signal for s in everyone if s["code"] is not None]
    lags_before = [t - sent_at[seq] for s in results for t, seq in s["got"] if sent_at[seq] < t_signal - 0.5]
    errors = sum(s["errors"] for s in everyone)

    # A probe counts as after the signal when its request started after it,
    # before when its answer came before it; the ones in between straddle.
    probes.sort()
    ready_after = [(t - t_signal, st) for t, _, p, st in probes if p == "/readyz" and t >= t_signal]
    health_after = [(t - t_signal, st) for t, _, p, st in probes if p == "/healthz" and t >= t_signal]
    ready_before = [st for _, e, p, st in probes if p == "/readyz" and e < t_signal]
    straddle = [{"path": p, "start_s": t - t_signal, "end_s": e - t_signal, "status": st}
                for t, e, p, st in probes if t < t_signal <= e]
    probe_time = [e - t for t, e, _, _ in probes]
    first_503 = next((t for t, st in ready_after if st == 503), None)
    first_ready_probe = ready_after[0][0] if ready_after else None
    ready_200_after = sum(1 for _, st in ready_after if st == 200)
    health_200 = [t for t, st in health_after if st == 200]
    health_other = {}
    for t, st in health_after:
        if st != 200:
            health_other[str(st)] = health_other.get(str(st), 0) + 1
    first_health_non200 = next((t for t, st in health_after if st != 200), None)

    out = {
        "scenario": "shutdown-with-traffic",
        "binary": os.path.abspath(binary),
        "config": {"sockets": SOCKETS, "rooms": ROOMS, "rate": RATE, "warmup_s": WARMUP,
                   "client_procs": CLIENT_PROCS, "layer": "memory", "RUST_LOG": "warn",
                   "shutdown_timeout_secs": 10},
        "loadavg": {"before": load_before, "at_signal": load_at_signal, "after": load_after},
        "connected": connected, "connect_failed": len(failed),
        "listener_close_codes": codes, "publisher_close_codes": pub_codes,
        "first_close_s": min(closes) if closes else None,
        "last_close_s": max(closes) if closes else None,
        "server_exit_s": t_exit - t_signal,
        "server_exit_code": server.returncode,
        "server_cpu_s_during_shutdown": None,
        "sent_total": len(sent), "sent_before_signal": len(sent_before),
        "sent_before_signal_never_delivered": len(sent_before_not_accepted),
        "accepted": len(accepted),
        "accepted_but_sent_after_signal": len(accepted_after_signal_send),
        "delivered_to_every_member": len(accepted) - len(lost),
        "lost": len(lost), "lost_sent_before_signal": len(lost_sent_before),
        "lost_sent_after_signal": len(lost) - len(lost_sent_before), "lost_detail": lost_detail, "missing_deliveries": missing_deliveries,
        "error_frames": errors,
        "delivery_lag_before_signal_s": {"p50": pct(lags_before, 50), "p99": pct(lags_before, 99),
                                         "max": max(lags_before) if lags_before else None},
        "probes": {
            "readyz_before_signal": {str(k): ready_before.count(k) for k in set(ready_before)},
            "straddling_signal": straddle,
            "probe_duration_s": {"p50": pct(probe_time, 50), "max": max(probe_time) if probe_time else None},
            "readyz_first_probe_after_signal_s": first_ready_probe,
            "readyz_first_503_s": first_503, "readyz_200_after_signal": ready_200_after,
            "readyz_after_signal": len(ready_after),
            "healthz_after_signal": len(health_after),
            "healthz_200_after_signal": len(health_200),
            "healthz_last_200_s": max(health_200) if health_200 else None,
            "healthz_first_non200_s": first_health_non200,
            "healthz_non200": health_other,
        },
        "log_lines": sum(1 for _ in open(log, errors="replace")),
    }
    del out["server_cpu_s_during_shutdown"]
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "fault-shutdown" + (f"-{os.environ['TAG']}" if os.environ.get("TAG") else "") + ".json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    shutil.copy(log, os.path.join(tempfile.gettempdir(), "fault-shutdown-server.log"))
    shutil.rmtree(workdir, ignore_errors=True)

    def ms(x):
        return "-" if x is None else f"{x * 1000:.0f} ms"

    rows = [
        ("sockets connected (listeners + publishers)", f"{connected} + {len(pub_results)}"),
        ("listener close codes", json.dumps(codes)),
        ("publisher close codes", json.dumps(pub_codes)),
        ("signal -> first close / last close", f"{ms(out['first_close_s'])} / {ms(out['last_close_s'])}"),
        ("signal -> server exit (code)", f"{ms(out['server_exit_s'])} ({server.returncode})"),
        ("messages sent (before signal)", f"{len(sent)} ({len(sent_before)})"),
        ("accepted (some member got it)", str(len(accepted))),
        ("delivered to every member before 1001", str(out["delivered_to_every_member"])),
        ("lost (accepted, some member missed it)", f"{len(lost)} ({missing_deliveries} deliveries)"),
        ("  of which sent before / after the signal", f"{len(lost_sent_before)} / {len(lost) - len(lost_sent_before)}"),
        ("accepted though sent after the signal", str(len(accepted_after_signal_send))),
        ("sent before signal, nobody got it", str(len(sent_before_not_accepted))),
        ("delivery lag before signal p50/p99", f"{ms(out['delivery_lag_before_signal_s']['p50'])} / "
                                                f"{ms(out['delivery_lag_before_signal_s']['p99'])}"),
        ("/readyz before signal", json.dumps(out["probes"]["readyz_before_signal"])),
        ("/readyz first probe after signal / first 503", f"{ms(first_ready_probe)} / {ms(first_503)}"),
        ("/readyz 200s after signal", f"{ready_200_after} of {len(ready_after)}"),
        ("/healthz 200 after signal", f"{len(health_200)} of {len(health_after)}, last at "
                                      f"{ms(out['probes']['healthz_last_200_s'])}; first non-200 at "
                                      f"{ms(first_health_non200)}; other {json.dumps(health_other)}"),
        ("loadavg before / at signal / after", f"{load_before} / {load_at_signal} / {load_after}"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
