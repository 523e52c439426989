#!/usr/bin/env python3
"""Merge the raw results of bench/run.sh into one JSON file, a table on
stdout and an SVG chart. Standard library only.

Raw files are `<server>-<scenario>.json`, one JSON object each, as written by
`loadgen` (or by run.sh for the idle runs, and `{"error": ...}` /
`{"not_available": ...}` where a run could not happen). The `lang` scenario
writes its own under `lang/`: `<plugin>-build.json` (size, compile, cold
start), `<plugin>-<mode>-{warm,rtt,idle}.json` and `<plugin>-fanout.json`
per chat plugin, and `daphne-{rtt,idle,fanout}.json`.
"""

import argparse
import json
import os
import platform
from html import escape

# "switchyard-shared" is the same server on ws/echo-shared/: the echo plugin
# on one shared instance (echo and idle scenarios only).
SERVERS = ["switchyard", "switchyard-shared", "ceiling", "daphne"]
LABELS = {"switchyard": "Switchyard", "switchyard-shared": "Switchyard, shared echo",
          "ceiling": "axum ceiling", "daphne": "Daphne+Channels"}
COLORS = {"switchyard": "#1f77b4", "switchyard-shared": "#9467bd", "ceiling": "#7f7f7f",
          "daphne": "#2ca02c"}


def get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d or d[p] is None:
            return None
        d = d[p]
    return d


def ms(v):
    return None if v is None else v / 1000.0


# (section, file, metric, unit, higher_is_better, extractor)
METRICS = [
    ("echo (50 conns, closed loop)", "echo", "messages/s", "msg/s", True, lambda j: get(j, "messages_per_s")),
    ("echo (50 conns, closed loop)", "echo", "RTT p50", "ms", False, lambda j: ms(get(j, "rtt", "p50_us"))),
    ("echo (50 conns, closed loop)", "echo", "RTT p99", "ms", False, lambda j: ms(get(j, "rtt", "p99_us"))),
    ("echo (50 conns, closed loop)", "echo", "RTT p999", "ms", False, lambda j: ms(get(j, "rtt", "p999_us"))),
]
for layer, title in [("memory", "fan-out, in-memory layer (1 process)"), ("redis", "fan-out, Redis layer (2 processes)")]:
    f = "fanout-" + layer
    METRICS += [
        (title, f, "deliveries/s", "/s", True, lambda j: get(j, "deliveries_per_s")),
        (title, f, "lost", "msgs", False, lambda j: get(j, "lost")),
        (title, f, "latency p50", "ms", False, lambda j: ms(get(j, "latency", "p50_us"))),
        (title, f, "latency p99", "ms", False, lambda j: ms(get(j, "latency", "p99_us"))),
    ]


def idle_metrics(n):
    title = f"{n:,} idle connections (echo)"
    f = f"idle-{n}"
    return [
        (title, f, "RSS per connection", "KiB", False, lambda j: get(j, "rss_per_conn_kib")),
        (title, f, "connects/s", "/s", True, lambda j: get(j, "connects_per_s")),
        (title, f, "failed + dropped", "conns", False,
         lambda j: None if get(j, "failed") is None else j["failed"] + (j.get("dropped_during_hold") or 0)),
    ]


def hibidle_metrics(n):
    title = f"{n:,} idle chat connections (hibernated)"
    f = f"hibidle-{n}"
    return [
        (title, f, "RSS per connection", "KiB", False, lambda j: get(j, "rss_per_conn_kib")),
        (title, f, "failed + dropped", "conns", False,
         lambda j: None if get(j, "failed") is None else j["failed"] + (j.get("dropped_during_hold") or 0)),
        (title, f, "first call after idle p50", "ms", False, lambda j: ms(get(j, "wake", "first_call", "p50_us"))),
        (title, f, "first call after idle p99", "ms", False, lambda j: ms(get(j, "wake", "first_call", "p99_us"))),
        (title, f, "next call p50", "ms", False, lambda j: ms(get(j, "wake", "awake_call", "p50_us"))),
    ]


CHURN = [
    ("churn (connect + close)", "churn", "cycles/s", "/s", True, lambda j: get(j, "cycles_per_s")),
    ("churn (connect + close)", "churn", "failures", "", False, lambda j: get(j, "failures")),
]


HTTP = [
    ("http (50 keep-alive conns, JSON GET)", "http", "requests/s", "/s", True, lambda j: get(j, "requests_per_s")),
    ("http (50 keep-alive conns, JSON GET)", "http", "latency p50", "ms", False, lambda j: ms(get(j, "latency", "p50_us"))),
    ("http (50 keep-alive conns, JSON GET)", "http", "latency p99", "ms", False, lambda j: ms(get(j, "latency", "p99_us"))),
    ("http (50 keep-alive conns, JSON GET)", "http", "non-200 answers", "", False, lambda j: get(j, "not_ok")),
]


# The lang scenario: the chat plugin per language, beside Daphne.
LANG_COLUMNS = [("chat", "Rust chat"), ("chat_py", "Python chat"), ("chat_js", "JS chat"),
                ("daphne", "Daphne (tutorial consumer)")]
MODES = ["per-connection", "shared"]


def mib(v):
    return None if v is None else v / 1024.0


def lang_metrics():
    """(section, metric, unit, higher_is_better, extractor(lang_raw, plugin))."""
    def f(name, *path, scale=None):
        def ext(raw, p):
            v = get(raw.get(f"{p}-{name}"), *path)
            return scale(v) if scale and isinstance(v, (int, float)) else v
        return ext

    def daphne_or(name, dname, *path, scale=None):
        mine, theirs = f(name, *path, scale=scale), f(dname, *path, scale=scale)
        return lambda raw, p: theirs(raw, p) if p == "daphne" else mine(raw, p)

    sec = lambda v: v / 1000.0
    rows = [
        ("component", "size", "MB", False, f("build", "size_bytes", scale=lambda v: v / 1e6)),
        ("component", "switchyard compile", "s", False, f("build", "compile_ms", scale=sec)),
        ("component", "cold start to loaded (no .cwasm, empty cache)", "s", False,
         f("build", "cold_start_ms", scale=sec)),
        ("component", "RSS after cold start", "MiB", False, f("build", "cold_rss_kib", scale=mib)),
    ]
    for mode in MODES:
        rows.append(("component", f"warm start to loaded (.cwasm), {mode}", "s", False,
                     f(f"{mode}-warm", "start_ms", scale=sec)))
    for mode in MODES:
        title = f"round trips, {mode} instances (Daphne: its one run)"
        rows += [
            (title, "messages/s", "msg/s", True, daphne_or(f"{mode}-rtt", "rtt", "messages_per_s")),
            (title, "RTT p50", "ms", False, daphne_or(f"{mode}-rtt", "rtt", "rtt", "p50_us", scale=ms)),
            (title, "RTT p99", "ms", False, daphne_or(f"{mode}-rtt", "rtt", "rtt", "p99_us", scale=ms)),
            (title, "failed connections", "", False, daphne_or(f"{mode}-rtt", "rtt", "failed_conns")),
        ]
    for mode in MODES:
        title = f"idle members of one room, {mode} instances (Daphne: its one run)"
        rows += [
            (title, "RSS before (base)", "MiB", False, daphne_or(f"{mode}-idle", "idle", "rss_before_kib", scale=mib)),
            (title, "RSS per connection", "KiB", False, daphne_or(f"{mode}-idle", "idle", "rss_per_conn_kib")),
            (title, "failed + dropped", "conns", False,
             lambda raw, p, m=mode: (lambda j: None if get(j, "failed") is None
                                     else j["failed"] + (j.get("dropped_during_hold") or 0))(
                 raw.get("daphne-idle" if p == "daphne" else f"{p}-{m}-idle"))),
        ]
    title = "fan-out to one room (plugin's shipped mode)"
    rows += [
        (title, "instance mode", "", None, lambda raw, p: "-" if p == "daphne" else get(raw.get(f"{p}-build"), "default_mode")),
        (title, "deliveries/s", "/s", True, f("fanout", "deliveries_per_s")),
        (title, "lost", "msgs", False, f("fanout", "lost")),
        (title, "latency p50", "ms", False, f("fanout", "latency", "p50_us", scale=ms)),
        (title, "latency p99", "ms", False, f("fanout", "latency", "p99_us", scale=ms)),
    ]
    return rows


def lang_result(raw_dir):
    """The lang scenario's rows, or None when it did not run."""
    d = os.path.join(raw_dir, "lang")
    if not os.path.isdir(d):
        return None
    raw = {}
    for name in sorted(os.listdir(d)):
        if name.endswith(".json"):
            try:
                raw[name[:-5]] = json.load(open(os.path.join(d, name)))
            except (OSError, ValueError) as e:
                raw[name[:-5]] = {"error": f"unreadable: {e}"}
    rows = []
    for section, metric, unit, higher, ext in lang_metrics():
        row = {"section": section, "metric": metric, "unit": unit, "higher_is_better": higher}
        for p, _ in LANG_COLUMNS:
            try:
                row[p] = ext(raw, p)
            except (KeyError, TypeError):
                row[p] = None
        row["py_vs_daphne"] = ratio(row["chat_py"], row["daphne"])
        rows.append(row)
    targets = []
    for mode in MODES:
        title = f"round trips, {mode} instances"
        thr = next(r for r in rows if r["section"].startswith(title) and r["metric"] == "messages/s")
        p99 = next(r for r in rows if r["section"].startswith(title) and r["metric"] == "RTT p99")
        ok = None
        if all(isinstance(r[k], (int, float)) for r in (thr, p99) for k in ("chat_py", "daphne")):
            ok = thr["chat_py"] > thr["daphne"] and p99["chat_py"] < p99["daphne"]
        targets.append({"target": f"Python chat ({mode}) beats Daphne's Python consumer on messages/s and RTT p99",
                        "measured": f"{fmt(thr['chat_py'], 'msg/s')} vs {fmt(thr['daphne'], 'msg/s')} msg/s, "
                                    f"p99 {fmt(p99['chat_py'], 'ms')} vs {fmt(p99['daphne'], 'ms')} ms",
                        "goal": "higher msg/s, lower p99", "met": ok})
    return {"rows": rows, "targets": targets, "raw": raw}


def lang_table_lines(lang):
    head = ["scenario", "metric"] + [label for _, label in LANG_COLUMNS] + ["Python/Daphne"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    last = None
    for r in lang["rows"]:
        unit = f" ({r['unit']})" if r["unit"] else ""
        sec = r["section"] if r["section"] != last else ""
        last = r["section"]
        rv = "-" if r["py_vs_daphne"] is None else f"{r['py_vs_daphne']:.2f}x"
        lines.append("| " + " | ".join([sec, r["metric"] + unit]
                                       + [fmt(r[p], r["unit"]) for p, _ in LANG_COLUMNS] + [rv]) + " |")
    return lines


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, {mem}, Linux {platform.release()}"


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if unit in ("ms", "s"):
        return f"{v:.2f}" if v < 100 else f"{v:.0f}"
    if unit in ("KiB", "MiB", "MB"):
        return f"{v:.1f}"
    if abs(v) >= 100 or v == int(v):
        return f"{v:,.0f}"
    return f"{v:.2f}"


def ratio(a, b):
    if a is None or b is None or isinstance(a, str) or isinstance(b, str) or b == 0:
        return None
    return a / b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--svg", required=True)
    ap.add_argument("--date", required=True)
    ap.add_argument("--load-before", default="")
    ap.add_argument("--load-after", default="")
    ap.add_argument("--secs", type=int, default=0)
    ap.add_argument("--params", default="")
    args = ap.parse_args()

    raw = {}
    for name in sorted(os.listdir(args.raw)):
        if name.endswith(".json"):
            try:
                raw[name[:-5]] = json.load(open(os.path.join(args.raw, name)))
            except (OSError, ValueError) as e:
                raw[name[:-5]] = {"error": f"unreadable: {e}"}

    sizes = sorted({int(k.split("-")[-1]) for k in raw if "-idle-" in k})
    metrics = list(METRICS)
    for n in sizes:
        metrics += idle_metrics(n)
    for n in sorted({int(k.split("-")[-1]) for k in raw if "-hibidle-" in k}):
        metrics += hibidle_metrics(n)
    metrics += CHURN
    metrics += HTTP

    rows = []
    for section, f, metric, unit, higher, ext in metrics:
        row = {"section": section, "metric": metric, "unit": unit, "higher_is_better": higher}
        for s in SERVERS:
            j = raw.get(f"{s}-{f}")
            if j is None:
                v = None
            elif "not_available" in j:
                v = "n/a in this build"
            elif "error" in j and ext(j) is None:
                v = "error"
            else:
                v = ext(j)
            row[s] = v
        # The ceiling has no Redis layer: its in-process fan-out is the
        # ceiling for the Redis rows too.
        if f == "fanout-redis" and row["ceiling"] is None:
            j = raw.get("ceiling-fanout-memory")
            row["ceiling"] = ext(j) if j else None
            row["ceiling_is_in_process"] = True
        row["vs_daphne"] = ratio(row["switchyard"], row["daphne"])
        row["vs_ceiling"] = ratio(row["switchyard"], row["ceiling"])
        row["shared_vs_daphne"] = ratio(row["switchyard-shared"], row["daphne"])
        row["shared_vs_ceiling"] = ratio(row["switchyard-shared"], row["ceiling"])
        rows.append(row)

    def find(section_prefix, metric):
        for r in rows:
            if r["section"].startswith(section_prefix) and r["metric"] == metric:
                return r
        return None

    targets = []

    def target(name, value, goal, ok):
        targets.append({"target": name, "measured": value, "goal": goal,
                        "met": None if ok is None else bool(ok)})

    r = find("echo", "messages/s")
    for mode, key in [("", "vs_"), (", shared echo", "shared_vs_")]:
        target(f"echo messages/s vs Daphne{mode}", r and r[key + "daphne"], ">= 15x",
               None if not r or r[key + "daphne"] is None else r[key + "daphne"] >= 15)
        target(f"echo messages/s vs ceiling{mode}", r and r[key + "ceiling"], ">= 0.8x",
               None if not r or r[key + "ceiling"] is None else r[key + "ceiling"] >= 0.8)
    r = find("fan-out, in-memory", "deliveries/s")
    target("fan-out in-memory deliveries/s vs ceiling", r and r["vs_ceiling"], ">= 0.8x",
           None if not r or r["vs_ceiling"] is None else r["vs_ceiling"] >= 0.8)
    r = find("fan-out, Redis", "deliveries/s")
    lost = find("fan-out, Redis", "lost")
    ok = None
    if r and r["vs_daphne"] is not None and lost and isinstance(lost["switchyard"], (int, float)):
        ok = r["vs_daphne"] >= 30 and lost["switchyard"] == 0
    target("fan-out Redis (2 processes) deliveries/s vs Daphne + channels_redis, none lost",
           r and (r["vs_daphne"] if r["vs_daphne"] is not None else r["switchyard"]), ">= 30x, lost = 0", ok)
    r = find("http", "requests/s")
    target("http JSON GET requests/s vs ceiling", r and r["vs_ceiling"], ">= 0.6x",
           None if not r or r["vs_ceiling"] is None else r["vs_ceiling"] >= 0.6)
    target("http JSON GET requests/s vs Daphne", r and r["vs_daphne"], ">= 20x",
           None if not r or r["vs_daphne"] is None else r["vs_daphne"] >= 20)
    if sizes:
        big = max(sizes)
        rss = find(f"{big:,} idle", "RSS per connection")
        fail = find(f"{big:,} idle", "failed + dropped")
        for server, mode in [("switchyard", "per-connection instances"), ("switchyard-shared", "shared echo")]:
            ok = None
            if rss and isinstance(rss[server], (int, float)) and fail and isinstance(fail[server], (int, float)):
                ok = fail[server] == 0 and rss[server] <= 32
                if isinstance(rss["daphne"], (int, float)):
                    ok = ok and rss[server] < rss["daphne"]
            target(f"{big:,} idle ({mode}): no failures, RSS/conn <= 32 KiB and below Daphne",
                   rss and rss[server], "<= 32 KiB, < Daphne", ok)

    lang = lang_result(args.raw)
    result = {
        "date": args.date,
        "machine": machine(),
        "load_average_before": args.load_before,
        "load_average_after": args.load_after,
        "suite_secs": args.secs,
        "params": args.params,
        "rows": rows,
        "targets": targets,
        "raw": raw,
    }
    if lang is not None:
        result["lang"] = lang
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1, sort_keys=True)
        fh.write("\n")

    print_table(result, bool(raw))
    if lang is not None:
        print_lang_table(lang)
    # A run of the lang scenario alone leaves the suite's chart as it is.
    if raw:
        with open(args.svg, "w") as fh:
            fh.write(svg(result))


def table_lines(result):
    head = ["scenario", "metric", "Switchyard", "Sy shared echo", "ceiling", "Daphne",
            "Sy/Daphne", "Sy/ceiling", "shared/Daphne", "shared/ceiling"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    last = None
    for r in result["rows"]:
        unit = f" ({r['unit']})" if r["unit"] else ""
        sec = r["section"] if r["section"] != last else ""
        last = r["section"]
        ceil = fmt(r["ceiling"], r["unit"]) + (" *" if r.get("ceiling_is_in_process") and r["ceiling"] is not None else "")
        rv = lambda x: "-" if x is None else f"{x:.2f}x"
        lines.append("| " + " | ".join([
            sec, r["metric"] + unit, fmt(r["switchyard"], r["unit"]),
            fmt(r["switchyard-shared"], r["unit"]), ceil, fmt(r["daphne"], r["unit"]),
            rv(r["vs_daphne"]), rv(r["vs_ceiling"]), rv(r["shared_vs_daphne"]),
            rv(r["shared_vs_ceiling"])]) + " |")
    return lines


def print_table(result, suite=True):
    print(f"Benchmarks, {result['date']}, {result['machine']}")
    print(f"load average before/after: {result['load_average_before']} / {result['load_average_after']}; "
          f"suite {result['suite_secs']} s; {result['params']}")
    print()
    if not suite:
        return
    for line in table_lines(result):
        print(line)
    print()
    print("* the ceiling has no Redis layer: its figure is the in-process fan-out.")
    print()
    print_targets(result["targets"])


def print_lang_table(lang):
    print()
    print("The chat per language (lang scenario)")
    print()
    for line in lang_table_lines(lang):
        print(line)
    print()
    print_targets(lang["targets"])


def print_targets(targets):
    print("| target | goal | measured | met |")
    print("|---|---|---|---|")
    for t in targets:
        m = t["measured"]
        ms_ = "-" if m is None else (f"{m:.2f}" if isinstance(m, (int, float)) else str(m))
        met = {True: "yes", False: "NO", None: "not measured"}[t["met"]]
        print(f"| {t['target']} | {t['goal']} | {ms_} | {met} |")


def svg(result):
    panels = [
        ("echo: messages/s (higher is better)", "echo (", "messages/s"),
        ("echo: RTT p99, ms (lower is better)", "echo (", "RTT p99"),
        ("fan-out in-memory: deliveries/s", "fan-out, in-memory", "deliveries/s"),
        ("fan-out Redis, 2 processes: deliveries/s", "fan-out, Redis", "deliveries/s"),
    ]
    sizes = [r["section"] for r in result["rows"] if r["metric"] == "RSS per connection"]
    for sec in sizes:
        n = sec.split(" ")[0]
        panels.append((f"{n} idle: server RSS per connection, KiB (lower is better)", sec, "RSS per connection"))
    if sizes:
        panels.append((f"{sizes[-1].split(' ')[0]} idle: connects/s", sizes[-1], "connects/s"))
    panels.append(("churn: connect + close cycles/s", "churn", "cycles/s"))
    panels.append(("http: JSON GET requests/s (higher is better)", "http", "requests/s"))

    width, left, bar_h, gap = 800, 190, 16, 4
    y = 60
    body = []
    for title, sec, metric in panels:
        row = next((r for r in result["rows"] if r["section"].startswith(sec) and r["metric"] == metric), None)
        if row is None:
            continue
        body.append(f'<text x="10" y="{y}" font-weight="bold">{escape(title)}</text>')
        y += 8
        servers = [s for s in SERVERS if s != "switchyard-shared" or row[s] is not None]
        vals = [row[s] for s in servers]
        nums = [v for v in vals if isinstance(v, (int, float))]
        top = max(nums) if nums else 1
        top = top or 1
        for s, v in zip(servers, vals):
            label = LABELS[s] + (" *" if s == "ceiling" and row.get("ceiling_is_in_process") else "")
            body.append(f'<text x="{left - 6}" y="{y + bar_h - 4}" text-anchor="end">{escape(label)}</text>')
            if isinstance(v, (int, float)):
                w = max(1, (width - left - 110) * v / top)
                body.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{COLORS[s]}"/>')
                body.append(f'<text x="{left + w + 4:.1f}" y="{y + bar_h - 4}">{escape(fmt(v, row["unit"]))}</text>')
            else:
                body.append(f'<text x="{left + 4}" y="{y + bar_h - 4}" fill="#a00">{escape(str(v or "not measured"))}</text>')
            y += bar_h + gap
        y += 22
    height = y + 20
    head = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" font-size="15" font-weight="bold">Switchyard vs Daphne + Channels vs bare axum '
        f'({escape(result["date"][:10])})</text>',
        f'<text x="10" y="38" fill="#444">{escape(result["machine"])}; load avg before run '
        f'{escape(result["load_average_before"])}</text>',
    ]
    foot = [f'<text x="10" y="{height - 8}" fill="#444">* the ceiling has no Redis layer: '
            f'its bar is the in-process fan-out. bash bench/run.sh</text>', "</svg>"]
    return "\n".join(head + body + foot) + "\n"


if __name__ == "__main__":
    main()
