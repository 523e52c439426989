#!/usr/bin/env bash
# bench/stations.sh: the stations app side by side, one command.
#
#   bash bench/stations.sh
#
# The same app twice, on one private redis-server each time (Redis layer and
# Redis-backed state on both sides): Switchyard serving the `stations`
# plugin, and the Django project of examples/django_stations (a Django view
# and a Channels consumer, the Channels way) under Daphne, installed from
# PyPI into bench/.venv-stations (pinned in its requirements.txt). The same
# client (target/release/stationload) opens SUBS dashboard sockets on the
# per-station feeds, then one closed-loop writer per station cycles
# swap -> charging -> charged through the HTTP API for SECS seconds.
# Reports changes and swaps recorded per second, deliveries per second,
# lost deliveries, and the API-to-socket latency (POST sent -> socket
# received) p50/p99. Writes bench/results/stations-<UTC date>.json and prints
# a table. Benchmarks are not tests: nothing here asserts a timing.
#
# Knobs: SUBS=1000, SECS=10, STATIONS=5, SERVERS="switchyard daphne", SKIP_BUILD=1.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SUBS=${SUBS:-1000}
SECS=${SECS:-10}
STATIONS=${STATIONS:-5}
SERVERS=${SERVERS:-"switchyard daphne"}

say() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'bench/stations.sh: %s\n' "$*" >&2; exit 1; }

ulimit -n "$(ulimit -Hn)" || die "cannot raise the open-file limit"
command -v redis-server >/dev/null || die "redis-server is missing (apt-get install redis-server)"
command -v python3 >/dev/null || die "python3 is missing"

if [ -z "${SKIP_BUILD:-}" ]; then
    say "building (release): switchyard, stationload; example plugins"
    cargo xtask plugins >&2 || die "cargo xtask plugins failed"
    cargo build --release -p switchyard -p switchyard-bench --bin switchyard --bin stationload >&2 \
        || die "release build failed"
fi
BIN=$ROOT/target/release

REQ=$ROOT/examples/django_stations/requirements.txt
VENV=$ROOT/bench/.venv-stations
if ! cmp -s "$REQ" "$VENV/.installed-requirements" 2>/dev/null; then
    say "installing the Django project's stack into bench/.venv-stations"
    python3 -m venv "$VENV" || die "python3 -m venv failed"
    "$VENV/bin/pip" install -q -r "$REQ" >&2 || die "pip install failed"
    cp "$REQ" "$VENV/.installed-requirements"
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    sleep 0.3
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT PID SECS: 0 once the port accepts, 1 if PID died or time ran out.
wait_port() {
    local deadline=$((SECONDS + $3))
    while [ $SECONDS -lt "$deadline" ]; do
        kill -0 "$2" 2>/dev/null || return 1
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

stop() {
    kill "$1" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null
}

# A fresh, empty Redis for each server.
start_redis() {
    REDIS_SOCK=$WORK/redis-$1.sock
    redis-server --port 0 --unixsocket "$REDIS_SOCK" --save "" --appendonly no \
        >"$WORK/redis-$1.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    for _ in $(seq 100); do [ -S "$REDIS_SOCK" ] && break; sleep 0.1; done
    [ -S "$REDIS_SOCK" ] || die "redis-server did not start"
    REDIS_URL_BENCH="unix://$REDIS_SOCK"
}

start_switchyard() {
    SRV_PORT=$(free_port)
    RUST_LOG=warn REDIS_URL=$REDIS_URL_BENCH "$BIN/switchyard" serve -b 127.0.0.1 -p "$SRV_PORT" \
        --plugins "$ROOT/target/plugins" >"$1" 2>&1 &
    SRV_PID=$!
    PIDS+=("$SRV_PID")
    wait_port "$SRV_PORT" "$SRV_PID" 120 || die "switchyard did not start: $(tail -3 "$1")"
    # It binds first and compiles its plugins in the background.
    local deadline=$((SECONDS + 600))
    until grep -q '^  plugins loaded:' "$1"; do
        kill -0 "$SRV_PID" 2>/dev/null && [ $SECONDS -lt "$deadline" ] ||
            die "switchyard did not load its plugins: $(tail -3 "$1")"
        sleep 0.1
    done
}

RESULTS=()
for server in $SERVERS; do
    start_redis "$server"
    case $server in
    switchyard)
        start_switchyard "$WORK/switchyard.log"
        ;;
    daphne)
        # The Django side keeps no seed of its own: Switchyard seeds the
        # shared keys on its first request, then steps aside.
        start_switchyard "$WORK/seed.log"
        python3 -c 'import urllib.request,sys; urllib.request.urlopen(sys.argv[1]).read()' \
            "http://127.0.0.1:$SRV_PORT/api/stations/" || die "seeding failed"
        stop "$SRV_PID"
        SRV_PORT=$(free_port)
        (cd "$ROOT/examples/django_stations" && REDIS_URL=$REDIS_URL_BENCH \
            exec "$VENV/bin/daphne" -v 0 -b 127.0.0.1 -p "$SRV_PORT" stationsite.asgi:application) \
            >"$WORK/daphne.log" 2>&1 &
        SRV_PID=$!
        PIDS+=("$SRV_PID")
        wait_port "$SRV_PORT" "$SRV_PID" 60 || die "daphne did not start: $(tail -3 "$WORK/daphne.log")"
        ;;
    *) die "unknown server $server" ;;
    esac
    say "$server: $SUBS sockets, $STATIONS writers, ${SECS}s"
    line=$("$BIN/stationload" --base "http://127.0.0.1:$SRV_PORT" --subs "$SUBS" \
        --stations "$STATIONS" --secs "$SECS") || line='{"scenario":"stations","error":"stationload failed"}'
    echo "$line" >&2
    RESULTS+=("$(python3 -c 'import json,sys; d=json.loads(sys.argv[2]); d["server"]=sys.argv[1]; print(json.dumps(d))' "$server" "$line")")
    stop "$SRV_PID"
    stop "$REDIS_PID"
done

mkdir -p "$ROOT/bench/results"
OUT=$ROOT/bench/results/stations-$(date -u +%Y-%m-%dT%H%M%SZ).json
printf '%s\n' "${RESULTS[@]}" | python3 -c '
import json, os, sys
rows = [json.loads(line) for line in sys.stdin if line.strip()]
with open(sys.argv[1], "w") as out:
    json.dump({"scenario": "stations", "cores": os.cpu_count(), "results": rows}, out, indent=2)
print("| server | swaps/s | changes/s | deliveries/s | lost | API-to-socket p50 | p99 |")
print("| --- | --- | --- | --- | --- | --- | --- |")
by = {}
for r in rows:
    by[r["server"]] = r
    if "error" in r:
        print("| %s | %s | | | | | |" % (r["server"], r["error"]))
        continue
    lat = r["latency"]
    print("| %s | %.1f | %.1f | %.0f | %d | %.1f ms | %.1f ms |" % (
        r["server"], r["swaps_per_s"], r["changes_per_s"], r["deliveries_per_s"],
        r["lost"], lat["p50_us"] / 1000, lat["p99_us"] / 1000))
s, d = by.get("switchyard"), by.get("daphne")
if s and d and "error" not in s and "error" not in d:
    print("\nswitchyard / daphne: swaps/s %.1fx, p50 latency %.1fx lower" % (
        s["swaps_per_s"] / max(d["swaps_per_s"], 1e-9),
        d["latency"]["p50_us"] / max(s["latency"]["p50_us"], 1)))
' "$OUT"
echo "wrote $OUT" >&2
