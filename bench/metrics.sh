#!/usr/bin/env bash
# bench/metrics.sh: what the Prometheus endpoint costs, one command.
#
#   bash bench/metrics.sh
#
# (a) scrape   time per GET /_switchyard/metrics (one keep-alive client,
#              SCRAPES requests in a row) with no socket open, then with
#              CONNS idle sockets open on the echo plugin (loadgen idle)
# (b) echo     the echo scenario of bench/run.sh (loadgen echo, ECHO_CONNS
#              connections, closed loop, ECHO_SECS seconds) against two
#              servers of the same binary running side by side, one with
#              `[metrics] enabled = true`, one with `= false`: ROUNDS rounds,
#              each one run against each server back to back (the order
#              swapped every round), so a busy machine's drift hits both
#              sides; the median messages/s of each side, and the median of
#              the per-round ratios on/off. Also the server's CPU time per
#              message (utime + stime from /proc/PID/stat over the run,
#              warm-up included, / messages): on a machine shared with other
#              work, throughput swings with the neighbours, CPU per message
#              much less
#
# Writes bench/results/metrics-<UTC date>.json and prints a table.
# Benchmarks are not tests: nothing here asserts a timing.
#
# Knobs (environment): CONNS=10000, SCRAPES=200, ECHO_CONNS=50,
# ECHO_SECS=5, ROUNDS=8, PROFILE=release (PROFILE=debug checks the script
# quickly with a debug build; its figures mean nothing), SKIP_BUILD=1.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CONNS=${CONNS:-10000}
SCRAPES=${SCRAPES:-200}
ECHO_CONNS=${ECHO_CONNS:-50}
ECHO_SECS=${ECHO_SECS:-5}
ROUNDS=${ROUNDS:-8}
PROFILE=${PROFILE:-release}
PER_CLIENT=4000
TOKEN=bench-metrics-token

say() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'bench/metrics.sh: %s\n' "$*" >&2; exit 1; }

ulimit -n "$(ulimit -Hn)" || die "cannot raise the open-file limit"
command -v python3 >/dev/null || die "python3 is missing"

if [ -z "${SKIP_BUILD:-}" ]; then
    say "building ($PROFILE): switchyard, loadgen; example plugins"
    cargo xtask plugins >&2 || die "cargo xtask plugins failed"
    cargo build --profile "$PROFILE" -p switchyard -p switchyard-bench --bin switchyard \
        --bin loadgen >&2 || die "build failed"
fi
case $PROFILE in dev | debug) BIN=$ROOT/target/debug ;; *) BIN=$ROOT/target/$PROFILE ;; esac
PLUGINS=$ROOT/target/plugins
for b in switchyard loadgen; do [ -x "$BIN/$b" ] || die "missing $BIN/$b"; done
[ -f "$PLUGINS/echo.wasm" ] || die "missing $PLUGINS/echo.wasm (cargo xtask plugins)"

WORK=$(mktemp -d /tmp/switchyard-metrics.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    sleep 0.3
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for side in on off; do
    enabled=true
    [ $side = off ] && enabled=false
    printf '[admin]\ntoken = "%s"\n\n[metrics]\nenabled = %s\n' "$TOKEN" "$enabled" >"$WORK/$side.toml"
done

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start SIDE: a server with metrics on or off; sets SRV_PID and SRV_PORT.
start() {
    SRV_PORT=$(free_port)
    RUST_LOG=warn REDIS_URL= "$BIN/switchyard" serve -c "$WORK/$1.toml" -b 127.0.0.1 \
        -p "$SRV_PORT" --plugins "$PLUGINS" >"$WORK/server-$1.log" 2>&1 &
    SRV_PID=$!
    PIDS+=("$SRV_PID")
    local deadline=$((SECONDS + 60))
    while [ $SECONDS -lt $deadline ]; do
        kill -0 "$SRV_PID" 2>/dev/null || die "server did not start: $(tail -3 "$WORK/server-$1.log")"
        (exec 3<>"/dev/tcp/127.0.0.1/$SRV_PORT") 2>/dev/null && return 0
        sleep 0.1
    done
    die "server did not open its port"
}

stop() {
    kill "$1" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null
}

# CPU time (user + system) of PID so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

URL() { echo "ws://127.0.0.1:${1:-$SRV_PORT}/ws/echo/"; }

# scrape LABEL: SCRAPES timed scrapes; one JSON line.
scrape() {
    python3 - "$SRV_PORT" "$TOKEN" "$SCRAPES" "$1" <<'EOF'
import http.client, json, statistics, sys, time
port, token, n, label = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
headers = {"Authorization": "Bearer " + token}
times, body = [], b""
for i in range(n + 5):
    t = time.perf_counter()
    conn.request("GET", "/_switchyard/metrics", headers=headers)
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - t
    if response.status != 200:
        sys.exit(f"scrape answered {response.status}: {body[:200]!r}")
    if i >= 5:  # the first few warm the connection and the encoder
        times.append(elapsed)
open_sockets = sum(
    float(line.rsplit(" ", 1)[1])
    for line in body.decode().splitlines()
    if line.startswith("switchyard_websocket_open_connections{")
)
times.sort()
ms = lambda s: round(s * 1000, 3)
print(json.dumps({
    "label": label, "scrapes": n, "open_sockets": open_sockets, "body_bytes": len(body),
    "p50_ms": ms(statistics.median(times)), "p99_ms": ms(times[int(len(times) * 0.99) - 1]),
    "mean_ms": ms(statistics.fmean(times)),
}))
EOF
}

# ---------------------------------------------------------------- (a) scrape
say "scrape: $SCRAPES scrapes with no socket, then with $CONNS idle sockets"
start on
scrape "0 sockets" >"$WORK/scrape-0.json" || die "scrape failed"
clients=$(((CONNS + PER_CLIENT - 1) / PER_CLIENT))
per=$((CONNS / clients))
hold=$WORK/hold
for ((i = 0; i < clients; i++)); do
    n=$per
    [ $i -eq $((clients - 1)) ] && n=$((CONNS - per * (clients - 1)))
    "$BIN/loadgen" idle --url "$(URL)" --conns "$n" --src "127.0.0.$((10 + 2 * i))" \
        --src "127.0.0.$((11 + 2 * i))" --hold-file "$hold" --max-hold 600 --deadline 300 \
        >"$WORK/idle-$i.out" 2>"$WORK/idle-$i.err" &
    PIDS+=($!)
done
deadline=$((SECONDS + 330))
while [ $SECONDS -lt $deadline ]; do
    ready=0
    for ((i = 0; i < clients; i++)); do
        grep -q '"phase":"connected"' "$WORK/idle-$i.out" 2>/dev/null && ready=$((ready + 1))
    done
    [ $ready -eq $clients ] && break
    sleep 0.5
done
connected=$(cat "$WORK"/idle-*.out | python3 -c '
import json, sys
print(sum(json.loads(l)["connected"] for l in sys.stdin if "\"phase\":\"connected\"" in l))')
echo "idle sockets open: $connected of $CONNS" >&2
scrape "$connected sockets" >"$WORK/scrape-n.json" || die "scrape failed"
touch "$hold"
sleep 1
stop "$SRV_PID"

# ---------------------------------------------------------------- (b) echo
start on
ON_PID=$SRV_PID ON_PORT=$SRV_PORT
start off
OFF_PID=$SRV_PID OFF_PORT=$SRV_PORT
for ((r = 1; r <= ROUNDS; r++)); do
    order="on off"
    [ $((r % 2)) -eq 0 ] && order="off on"
    for side in $order; do
        port=$ON_PORT pid=$ON_PID
        [ $side = off ] && port=$OFF_PORT pid=$OFF_PID
        say "echo round $r/$ROUNDS, metrics $side: $ECHO_CONNS connections, ${ECHO_SECS}s"
        ticks_before=$(cpu_ticks "$pid")
        timeout $((ECHO_SECS + 60)) "$BIN/loadgen" echo --url "$(URL "$port")" --conns "$ECHO_CONNS" \
            --secs "$ECHO_SECS" | tail -1 >"$WORK/echo-$side-$(printf %03d $r).json" || die "loadgen echo failed"
        echo $(($(cpu_ticks "$pid") - ticks_before)) >"$WORK/ticks-$side-$(printf %03d $r)"
    done
done
stop "$ON_PID"
stop "$OFF_PID"

mkdir -p "$ROOT/bench/results"
OUT=$ROOT/bench/results/metrics-$(date -u +%Y-%m-%dT%H:%M:%SZ).json
python3 - "$WORK" "$OUT" "$PROFILE" "$CONNS" "$ROUNDS" <<'EOF'
import glob, json, os, statistics, sys
work, out, profile, conns, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
load = lambda p: json.load(open(p))
scrapes = [load(os.path.join(work, "scrape-0.json")), load(os.path.join(work, "scrape-n.json"))]
echo = {side: [load(p) for p in sorted(glob.glob(os.path.join(work, f"echo-{side}-*.json")))]
        for side in ("on", "off")}
hz = os.sysconf("SC_CLK_TCK")
for side, runs in echo.items():
    ticks = [int(open(p).read()) for p in sorted(glob.glob(os.path.join(work, f"ticks-{side}-*")))]
    for run, t in zip(runs, ticks):
        # Over the whole run (warm-up included): an estimate of the
        # server's CPU per message, not a profile.
        run["server_cpu_secs"] = t / hz
        run["server_cpu_us_per_message"] = t / hz * 1e6 / max(run["messages"], 1)
cpu = {side: statistics.median(r["server_cpu_us_per_message"] for r in runs) for side, runs in echo.items()}
cpu_diff = (cpu["on"] - cpu["off"]) / cpu["off"] * 100
median = {side: statistics.median(r["messages_per_s"] for r in runs) for side, runs in echo.items()}
p99 = {side: statistics.median(r["rtt"]["p99_us"] for r in runs) for side, runs in echo.items()}
ratios = [on["messages_per_s"] / off["messages_per_s"] for on, off in zip(echo["on"], echo["off"])]
diff = (statistics.median(ratios) - 1) * 100
result = {
    "benchmark": "metrics", "profile": profile, "idle_sockets_wanted": conns,
    "cores": os.cpu_count(), "load_avg": open("/proc/loadavg").read().split()[:3],
    "scrape": scrapes, "echo": echo, "echo_rounds": rounds,
    "echo_median_messages_per_s": median, "echo_median_rtt_p99_us": p99,
    "echo_round_ratios_on_over_off": [round(x, 4) for x in ratios],
    "echo_on_vs_off_percent": round(diff, 2),
    "echo_median_server_cpu_us_per_message": cpu,
    "echo_cpu_per_message_on_vs_off_percent": round(cpu_diff, 2),
}
json.dump(result, open(out, "w"), indent=1)
print(f"\nmetrics benchmark ({profile} build), written to {out}")
print(f"{'scrape':<24}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'bytes':>10}")
for s in scrapes:
    print(f"{s['label']:<24}{s['p50_ms']:>10}{s['p99_ms']:>10}{s['mean_ms']:>10}{s['body_bytes']:>10}")
print(f"\n{'echo (median of ' + str(rounds) + ')':<24}{'msgs/s':>12}{'rtt p99 us':>12}{'cpu us/msg':>12}")
for side in ("on", "off"):
    print(f"{'metrics ' + side:<24}{median[side]:>12.0f}{p99[side]:>12}{cpu[side]:>12.2f}")
print(f"{'cpu per message on vs off':<24}{cpu_diff:>+11.2f}%")
print(f"{'on vs off (median ratio)':<24}{diff:>+11.2f}%   rounds: {', '.join(f'{x:.3f}' for x in ratios)}")
EOF
