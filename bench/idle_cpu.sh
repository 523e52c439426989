#!/usr/bin/env bash
# bench/idle_cpu.sh: the CPU an idle Switchyard server uses.
#
#   SKIP_BUILD=1 bash bench/idle_cpu.sh
#
# Starts target/release/switchyard with the example plugins (in-memory
# layer), warms it up with one short burst of connects, then measures the
# server process over IDLE_SECS (default 60) twice:
#
#   none    no connections at all;
#   idle    IDLE_CONNS (default 1000) idle WebSocket connections held open by
#           `loadgen idle` on ws/echo/ (an instance per connection).
#
# For each: CPU seconds (utime + stime from /proc/<pid>/stat, in clock
# ticks of 1/CLK_TCK s), CPU % of one core, and the context switches of all
# the server's threads (voluntary + involuntary, summed over
# /proc/<pid>/task/*/status): each is a thread waking up. A thread that
# exits meanwhile (tokio's idle blocking threads do after 10 s) takes its
# count with it, so the figure is a floor, clamped at 0. Keepalive pings
# (websocket.ping-interval-secs, 20 s by default) are real work: 1,000 idle
# sockets get 50 pings/s between them.
#
# Prints a table and writes bench/results/<UTC date>-idle-cpu.json (OUT to
# override). Not a test: nothing here asserts a figure.
#
# Knobs: IDLE_SECS=60, IDLE_CONNS=1000, BIN (default target/release),
# OUT, SKIP_BUILD=1.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
IDLE_SECS=${IDLE_SECS:-60}
IDLE_CONNS=${IDLE_CONNS:-1000}
BIN=${BIN:-$ROOT/target/release}
PLUGINS=$ROOT/target/plugins
OUT=${OUT:-$ROOT/bench/results/$(date -u +%Y-%m-%d)-idle-cpu.json}

die() { printf 'bench/idle_cpu.sh: %s\n' "$*" >&2; exit 1; }

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo xtask plugins >&2 || die "cargo xtask plugins failed"
    cargo build --release -p switchyard -p switchyard-bench >&2 || die "release build failed"
fi
for b in switchyard loadgen; do [ -x "$BIN/$b" ] || die "missing $BIN/$b"; done
[ -f "$PLUGINS/echo.wasm" ] || die "missing $PLUGINS/echo.wasm (run cargo xtask plugins)"
ulimit -n "$(ulimit -Hn)" || die "cannot raise the open-file limit"

WORK=$(mktemp -d /tmp/switchyard-idle-cpu.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUST_LOG=warn REDIS_URL= "$BIN/switchyard" serve -b 127.0.0.1 -p "$PORT" --plugins "$PLUGINS" \
    >"$WORK/server.log" 2>&1 &
SRV=$!
PIDS+=("$SRV")
for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    kill -0 "$SRV" 2>/dev/null || die "server exited: $(tail -3 "$WORK/server.log")"
    sleep 0.1
done
URL="ws://127.0.0.1:$PORT/ws/echo/"

# cpu_ticks PID: utime + stime (fields 14 and 15; the command may hold spaces).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# switches PID: context switches of every thread.
switches() {
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ {n += $2} END {print n + 0}'
}
threads() { ls "/proc/$1/task" | wc -l; }

# measure NAME CONNS: IDLE_SECS of the server doing nothing asked of it.
measure() {
    local t0 s0 t1 s1 start end
    t0=$(cpu_ticks "$SRV") s0=$(switches "$SRV") start=$(date +%s.%N)
    sleep "$IDLE_SECS"
    t1=$(cpu_ticks "$SRV") s1=$(switches "$SRV") end=$(date +%s.%N)
    python3 - "$1" "$2" "$t0" "$t1" "$s0" "$s1" "$start" "$end" "$(getconf CLK_TCK)" \
        "$(threads "$SRV")" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/rows.jsonl" <<'EOF'
import json, sys
name, conns, t0, t1, s0, s1, start, end, hz, threads, load = sys.argv[1:]
secs = float(end) - float(start)
cpu = (int(t1) - int(t0)) / int(hz)
print(json.dumps({
    "case": name, "connections": int(conns), "secs": round(secs, 2),
    "cpu_secs": cpu, "cpu_percent": round(100 * cpu / secs, 3),
    "context_switches": max(0, int(s1) - int(s0)),
    "context_switches_per_s": round(max(0, int(s1) - int(s0)) / secs, 1),
    "threads": int(threads), "load_average_after": load,
}))
EOF
}

# Warm up: the plugin instantiated, the allocator's pools touched.
timeout 30 "$BIN/loadgen" churn --url "$URL" --workers 2 --secs 0.5 >/dev/null 2>&1
sleep 2
echo "measuring: no connections, ${IDLE_SECS}s" >&2
measure none 0

HOLD=$WORK/hold
"$BIN/loadgen" idle --url "$URL" --conns "$IDLE_CONNS" --src 127.0.0.10 --src 127.0.0.11 \
    --hold-file "$HOLD" --max-hold $((IDLE_SECS + 120)) --deadline 120 \
    >"$WORK/idle.out" 2>"$WORK/idle.err" &
CLIENT=$!
PIDS+=("$CLIENT")
for _ in $(seq 1500); do
    grep -q '"phase":"connected"' "$WORK/idle.out" 2>/dev/null && break
    kill -0 "$CLIENT" 2>/dev/null || die "loadgen idle exited: $(tail -3 "$WORK/idle.err")"
    sleep 0.1
done
grep -q '"phase":"connected"' "$WORK/idle.out" || die "connections did not open"
sleep 2
echo "measuring: $IDLE_CONNS idle connections, ${IDLE_SECS}s" >&2
measure idle "$IDLE_CONNS"
touch "$HOLD"
wait "$CLIENT" 2>/dev/null

python3 - "$WORK/rows.jsonl" "$OUT" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(git rev-parse --short HEAD)" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
doc = {"date": sys.argv[3], "commit": sys.argv[4], "rows": rows}
json.dump(doc, open(sys.argv[2], "w"), indent=1)
print(f"{'case':<8} {'conns':>6} {'secs':>6} {'cpu s':>7} {'cpu %':>7} {'switches/s':>11} {'load after':>16}")
for r in rows:
    print(f"{r['case']:<8} {r['connections']:>6} {r['secs']:>6} {r['cpu_secs']:>7.2f} "
          f"{r['cpu_percent']:>7.3f} {r['context_switches_per_s']:>11} {r['load_average_after']:>16}")
print(f"wrote {sys.argv[2]}")
EOF
