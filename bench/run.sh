#!/usr/bin/env bash
# bench/run.sh: the benchmark suite, one command, side by side.
#
#   bash bench/run.sh
#
# Builds Switchyard, the example plugins, the load generator and the bare
# axum ceiling (release), installs Django + Channels + channels_redis +
# Daphne from PyPI into bench/.venv (pinned in bench/daphne/requirements.txt),
# starts a private redis-server on a free port, and measures, with the same
# client (target/release/loadgen) against each server in turn:
#
#   echo     50 connections, closed loop: messages/s, RTT p50/p99/p999
#   fanout   one room of 1,000 subscribers, one publisher at a fixed rate:
#            deliveries/s, lost, latency p50/p99; in-memory layer (one
#            process) and Redis layer (two processes, subscribers spread
#            over both, publisher on the first)
#   idle     1k and 15k idle connections on the echo plugin: server RSS per
#            connection (VmRSS after - before, / count), connect rate
#   churn    connect + close cycles per second
#   hibidle  (only when named in SCENARIOS) HIBIDLE_SIZES (15k) idle chat
#            sockets in one room (Switchyard: chat with hibernate-after-secs
#            = HIBERNATE_SECS, RSS measured once the metrics gauge shows them
#            all hibernated; Daphne: the tutorial chat consumer): RSS per
#            connection; then WAKE_CONNS (200) more, each alone in a room,
#            idle until hibernated, send one message each in turn: the first
#            call's round trip p50/p99 (waking) and the next call's (awake)
#   http     50 keep-alive HTTP connections, closed loop, GET of a small JSON
#            view (the hello plugin's api/hello/<name>/; the same view in
#            axum and in Django): requests/s, latency p50/p99
#   lang     the tutorial chat per language: chat (Rust), chat_py (Python),
#            chat_js (JavaScript), each alone in a plugin directory and run in
#            both instance modes (its manifest copied with `instance` set),
#            beside Daphne's tutorial ChatConsumer (when daphne is in SERVERS):
#            component size; `switchyard compile` time (no cache); cold start
#            (spawn to "plugins loaded", no .cwasm, empty compile cache) and
#            RSS then; warm start (with the .cwasm) per mode; round trips,
#            closed loop, LANG_CONNS clients each alone in its own room
#            awaiting its own broadcast back, LANG_SECS: messages/s, RTT
#            p50/p99; RSS before and per connection of LANG_IDLE idle members
#            of one room; fan-out as above to one room, in the plugin's
#            shipped mode. Writes raw/lang/*.json; its own table.
#   tls      (only when named in SCENARIOS) echo as above, four rows in one
#            run: Switchyard over wss:// and over ws://, the axum ceiling
#            over wss:// and ws://; certificates made by target/release/tlscert.
#            Prints its own table and writes bench/results/<date>-tls.json.
#
# Writes bench/results/<UTC date>.json, prints the table, and draws
# docs/bench.svg. Benchmarks are not tests: nothing here asserts a timing.
#
# Servers: switchyard (echo on ws/echo/, an instance per connection),
# switchyard-shared (the same server on ws/echo-shared/: echo on one shared
# instance; echo, idle and churn only), ceiling, daphne.
#
# Knobs (environment): SERVERS="switchyard switchyard-shared ceiling daphne",
# SCENARIOS="echo fanout idle churn http lang", ECHO_SECS=10, HTTP_CONNS=50, HTTP_SECS=10,
# FANOUT_SUBS=1000, FANOUT_RATE=100 (messages/s), FANOUT_SECS=10,
# IDLE_SIZES="1000 15000 19000", IDLE_DEADLINE=120, CHURN_SECS=10, CHURN_WORKERS=16,
# LANG_PLUGINS="chat chat_py chat_js", LANG_CONNS=50, LANG_SECS=10, LANG_IDLE=200,
# BIN (default target/release), SY_REDIS_WORKERS (worker threads of each of the two Redis-layer Switchyard
# processes; default half the cores), SKIP_BUILD=1.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

SERVERS=${SERVERS:-"switchyard switchyard-shared ceiling daphne"}
SCENARIOS=${SCENARIOS:-"echo fanout idle churn http lang"}
ECHO_CONNS=${ECHO_CONNS:-50}
ECHO_SECS=${ECHO_SECS:-10}
FANOUT_SUBS=${FANOUT_SUBS:-1000}
FANOUT_RATE=${FANOUT_RATE:-100}
FANOUT_SECS=${FANOUT_SECS:-10}
IDLE_SIZES=${IDLE_SIZES:-"1000 15000 19000"}
IDLE_PER_CLIENT=${IDLE_PER_CLIENT:-4000}
IDLE_DEADLINE=${IDLE_DEADLINE:-120}
HIBIDLE_SIZES=${HIBIDLE_SIZES:-15000}
HIBERNATE_SECS=${HIBERNATE_SECS:-2}
WAKE_CONNS=${WAKE_CONNS:-200}
CHURN_SECS=${CHURN_SECS:-10}
CHURN_WORKERS=${CHURN_WORKERS:-16}
HTTP_CONNS=${HTTP_CONNS:-50}
HTTP_SECS=${HTTP_SECS:-10}
LANG_PLUGINS=${LANG_PLUGINS:-"chat chat_py chat_js"}
LANG_CONNS=${LANG_CONNS:-50}
LANG_SECS=${LANG_SECS:-10}
LANG_IDLE=${LANG_IDLE:-200}
SY_REDIS_WORKERS=${SY_REDIS_WORKERS:-$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))}

say() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- setup
# Open files: the hard limit here is 20,000; servers and clients inherit it.
ulimit -n "$(ulimit -Hn)" || die "cannot raise the open-file limit"
[ "$(ulimit -n)" -ge 16500 ] || echo "warning: open-file limit $(ulimit -n): the 15k idle run will fail" >&2

# Every live wasm instance takes 3 memory mappings (fiber stack, its guard,
# linear memory): the kernel default vm.max_map_count (65,530) holds 19,000.
# The benchmark runs on the kernel as it is and records the setting.
echo "vm.max_map_count is $(cat /proc/sys/vm/max_map_count 2>/dev/null || echo unknown)" >&2

command -v redis-server >/dev/null || die "redis-server is missing (apt-get install redis-server)"
command -v python3 >/dev/null || die "python3 is missing"

if [ -z "${SKIP_BUILD:-}" ]; then
    say "building (release): switchyard, loadgen, ceiling; example plugins"
    cargo xtask plugins >&2 || die "cargo xtask plugins failed"
    cargo build --release -p switchyard -p switchyard-bench >&2 || die "release build failed"
fi
BIN=${BIN:-$ROOT/target/release}   # BIN=target/debug for a quick check of the script
PLUGINS=$ROOT/target/plugins
for b in switchyard loadgen httpload ceiling tlscert; do [ -x "$BIN/$b" ] || die "missing $BIN/$b"; done

VENV=$ROOT/bench/.venv
REQ=$ROOT/bench/daphne/requirements.txt
if [[ " $SERVERS " == *" daphne "* ]] && ! cmp -s "$REQ" "$VENV/.installed-requirements" 2>/dev/null; then
    say "installing the Daphne stack into bench/.venv"
    python3 -m venv "$VENV" || die "python3 -m venv failed"
    "$VENV/bin/pip" install -q -r "$REQ" >&2 || die "pip install failed"
    cp "$REQ" "$VENV/.installed-requirements"
fi

RUN_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
WORK=$(mktemp -d /tmp/switchyard-bench.XXXXXX)
RAW=$WORK/raw
mkdir -p "$RAW"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    sleep 0.3
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
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

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_port "$REDIS_PORT" "$REDIS_PID" 10 || die "redis-server did not start: $(tail -3 "$WORK/redis.log")"
REDIS_URL_BENCH="redis://127.0.0.1:$REDIS_PORT/0"

# start KIND LAYER LOG [PLUGIN_DIR]: starts one server on a free port (a
# Switchyard server over PLUGIN_DIR, default $PLUGINS); sets SRV_PID and
# SRV_PORT; returns 1 (with the log's tail in SRV_ERROR) if it did not come up.
start() {
    local kind=$1 layer=$2 log=$3 plugins=${4:-$PLUGINS}
    SRV_PORT=$(free_port)
    SRV_ERROR=""
    case $kind in
    switchyard | switchyard-shared)
        if [ "$layer" = redis ]; then
            # Two processes share the machine: each gets its share of the
            # cores as worker threads (SY_REDIS_WORKERS, default cores / 2).
            RUST_LOG=warn REDIS_URL=$REDIS_URL_BENCH "$BIN/switchyard" serve -b 127.0.0.1 \
                -p "$SRV_PORT" --plugins "$plugins" --workers "$SY_REDIS_WORKERS" >"$log" 2>&1 &
        else
            RUST_LOG=warn REDIS_URL= "$BIN/switchyard" serve -b 127.0.0.1 -p "$SRV_PORT" \
                --plugins "$plugins" >"$log" 2>&1 &
        fi
        ;;
    switchyard-tls)
        RUST_LOG=warn REDIS_URL= "$BIN/switchyard" serve -b 127.0.0.1 -p "$SRV_PORT" \
            --plugins "$plugins" --tls-cert "$TLS_DIR/cert.pem" --tls-key "$TLS_DIR/key.pem" \
            >"$log" 2>&1 &
        ;;
    ceiling)
        "$BIN/ceiling" "$SRV_PORT" >"$log" 2>&1 &
        ;;
    ceiling-tls)
        "$BIN/ceiling" "$SRV_PORT" "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" >"$log" 2>&1 &
        ;;
    daphne)
        (cd "$ROOT/bench/daphne" && BENCH_LAYER=$layer REDIS_URL=$REDIS_URL_BENCH \
            exec "$VENV/bin/daphne" -v 0 -b 127.0.0.1 -p "$SRV_PORT" benchsite.asgi:application) \
            >"$log" 2>&1 &
        ;;
    esac
    SRV_PID=$!
    PIDS+=("$SRV_PID")
    if ! wait_port "$SRV_PORT" "$SRV_PID" 60; then
        SRV_ERROR=$(tail -5 "$log" | tr '\n' ' ')
        kill "$SRV_PID" 2>/dev/null
        return 1
    fi
    # Switchyard binds first and compiles its plugins in the background.
    if [[ $kind == switchyard* ]] && ! wait_loaded "$log" "$SRV_PID" 600; then
        SRV_ERROR="plugins not loaded: $(tail -5 "$log" | tr '\n' ' ')"
        kill "$SRV_PID" 2>/dev/null
        return 1
    fi
}

# wait_loaded LOG PID SECS: 0 once the server's log says its plugins are loaded.
wait_loaded() {
    local deadline=$((SECONDS + $3))
    while [ $SECONDS -lt "$deadline" ]; do
        kill -0 "$2" 2>/dev/null || return 1
        grep -q '^  plugins loaded:' "$1" && return 0
        sleep 0.05
    done
    return 1
}

stop() {
    kill "$1" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# error_json FILE SCENARIO MESSAGE
error_json() {
    python3 -c 'import json,sys; print(json.dumps({"scenario": sys.argv[1], "error": sys.argv[2]}))' \
        "$2" "$3" >"$1"
}
na_json() {
    python3 -c 'import json,sys; print(json.dumps({"scenario": sys.argv[1], "not_available": sys.argv[2]}))' \
        "$2" "$3" >"$1"
}

# loadgen_to FILE SECS ARGS...: run the client with a time bound.
loadgen_to() {
    local out=$1 secs=$2
    shift 2
    if ! timeout "$secs" "$BIN/loadgen" "$@" >"$out.tmp" 2>"$out.err"; then
        error_json "$out" "$1" "loadgen failed: $(tail -3 "$out.err" | tr '\n' ' ')"
        return 1
    fi
    tail -1 "$out.tmp" >"$out"
}

URL() { echo "ws://127.0.0.1:$1$2"; }
# The echo endpoint of a server kind: switchyard-shared is the same server on
# the echo plugin's shared-instance route.
echo_path() { if [ "$1" = switchyard-shared ]; then echo /ws/echo-shared/; else echo /ws/echo/; fi; }

# ---------------------------------------------------------------- scenarios
scenario_echo() {
    local kind=$1 out=$RAW/$1-echo.json
    say "$kind: echo, $ECHO_CONNS connections, ${ECHO_SECS}s"
    start "$kind" memory "$WORK/$kind-echo.log" || { error_json "$out" echo "server did not start: $SRV_ERROR"; return; }
    loadgen_to "$out" $((ECHO_SECS + 60)) echo --url "$(URL "$SRV_PORT" "$(echo_path "$kind")")" \
        --conns "$ECHO_CONNS" --secs "$ECHO_SECS"
    stop "$SRV_PID"
}

# scenario_fanout KIND LAYER [ROOM OUT PLUGIN_DIR]: one room (default the
# Rust chat's /ws/chat/bench/) of FANOUT_SUBS subscribers.
scenario_fanout() {
    local kind=$1 layer=$2 room=${3:-/ws/chat/bench/} out=${4:-$RAW/$1-fanout-$2.json}
    local plugins=${5:-$PLUGINS} a b pid_a pid_b
    say "$kind: fan-out ($layer layer) on $room, $FANOUT_SUBS subscribers, $FANOUT_RATE msg/s for ${FANOUT_SECS}s"
    if ! start "$kind" "$layer" "$WORK/$kind-fanout-$layer-a.log" "$plugins"; then
        if [ "$kind" = switchyard ] && [ "$layer" = redis ]; then
            na_json "$out" fanout "not available in this build: $SRV_ERROR"
        else
            error_json "$out" fanout "server did not start: $SRV_ERROR"
        fi
        return
    fi
    a=$SRV_PORT pid_a=$SRV_PID
    local subs=(--sub-url "$(URL "$a" $room)")
    if [ "$layer" = redis ]; then
        if ! start "$kind" "$layer" "$WORK/$kind-fanout-$layer-b.log" "$plugins"; then
            error_json "$out" fanout "second server did not start: $SRV_ERROR"
            stop "$pid_a"
            return
        fi
        b=$SRV_PORT pid_b=$SRV_PID
        subs+=(--sub-url "$(URL "$b" $room)")
    fi
    loadgen_to "$out" $((FANOUT_SECS + 120)) fanout --url "$(URL "$a" $room)" "${subs[@]}" \
        --subs "$FANOUT_SUBS" --rate "$FANOUT_RATE" --secs "$FANOUT_SECS"
    stop "$pid_a"
    [ -n "${pid_b:-}" ] && stop "$pid_b"
    [ "$layer" = redis ] && redis-cli -p "$REDIS_PORT" flushall >/dev/null 2>&1
}

scenario_idle() {
    local kind=$1 conns=$2 out=$RAW/$1-idle-$2.json
    say "$kind: $conns idle connections"
    start "$kind" memory "$WORK/$kind-idle-$conns.log" || { error_json "$out" idle "server did not start: $SRV_ERROR"; return; }
    idle_rss "$SRV_PID" "$(URL "$SRV_PORT" "$(echo_path "$kind")")" "$conns" "$out" "$kind-$conns"
    stop "$SRV_PID"
}

# hold_idle URL CONNS PREFIX MAX_HOLD: open CONNS idle connections to URL
# from as many loadgen clients as IDLE_PER_CLIENT asks (each from its own
# 127.0.0.x source addresses, writing $WORK/PREFIX-<i>.out), and return once
# every client reports its connections open (or gave up). They hold until
# release_idle (or MAX_HOLD seconds).
hold_idle() {
    local url=$1 conns=$2 prefix=$3 max_hold=$4 i n ready
    local clients=$(((conns + IDLE_PER_CLIENT - 1) / IDLE_PER_CLIENT))
    local per=$((conns / clients))
    HOLD_FILE=$WORK/$prefix-hold
    HOLD_PIDS=()
    rm -f "$HOLD_FILE"
    for ((i = 0; i < clients; i++)); do
        n=$per
        [ $i -eq $((clients - 1)) ] && n=$((conns - per * (clients - 1)))
        "$BIN/loadgen" idle --url "$url" --conns "$n" --src "127.0.0.$((10 + 2 * i))" \
            --src "127.0.0.$((11 + 2 * i))" --hold-file "$HOLD_FILE" --max-hold "$max_hold" \
            --deadline "$IDLE_DEADLINE" >"$WORK/$prefix-$i.out" 2>"$WORK/$prefix-$i.err" &
        HOLD_PIDS+=($!)
        PIDS+=($!)
    done
    local deadline=$((SECONDS + IDLE_DEADLINE + 30))
    while [ $SECONDS -lt $deadline ]; do
        ready=0
        for ((i = 0; i < clients; i++)); do
            grep -q '"phase":"connected"' "$WORK/$prefix-$i.out" 2>/dev/null && ready=$((ready + 1))
        done
        [ $ready -eq "$clients" ] && break
        sleep 0.2
    done
}

# release_idle: let hold_idle's clients close, and wait for them.
release_idle() {
    local p
    touch "$HOLD_FILE"
    for p in "${HOLD_PIDS[@]}"; do wait "$p" 2>/dev/null; done
}

# idle_rss PID URL CONNS OUT TAG: warm the server up, hold CONNS idle
# connections to URL, and write its RSS before and after (and per
# connection) to OUT; TAG names the work files.
idle_rss() {
    local pid=$1 url=$2 conns=$3 out=$4 tag=$5
    # Warm up (plugin instantiated once, allocator pools touched), then settle.
    timeout 30 "$BIN/loadgen" churn --url "$url" --workers 2 --secs 0.5 >/dev/null 2>&1
    sleep 1
    local before
    before=$(rss_kib "$pid")
    python3 "$ROOT/bench/memmap.py" "$pid" >"$WORK/memmap-$tag-before.json" 2>/dev/null
    hold_idle "$url" "$conns" "idle-$tag" 300
    sleep 2
    local after alive=1
    after=$(rss_kib "$pid" 2>/dev/null) || alive=0
    [ -z "$after" ] && alive=0
    python3 "$ROOT/bench/memmap.py" "$pid" >"$WORK/memmap-$tag-after.json" 2>/dev/null
    sleep 1
    release_idle
    python3 - "$out" "$conns" "${before:-0}" "${after:-0}" "$alive" "$WORK/memmap-$tag" "$WORK"/idle-"$tag"-*.out <<'EOF'
import json, sys
out, conns, before, after, alive = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None
mm_before, mm_after = load(sys.argv[6] + "-before.json"), load(sys.argv[6] + "-after.json")
done = []
for path in sys.argv[7:]:
    lines = [l for l in open(path).read().splitlines() if l.startswith("{")]
    done += [json.loads(l) for l in lines if '"phase":"done"' in l]
connected = sum(d["connected"] for d in done)
failed = conns - connected
secs = max([d["connect_secs"] for d in done] or [0])
errors = [d["first_error"] for d in done if d.get("first_error")]
res = {
    "scenario": "idle", "conns": conns, "connected": connected, "failed": failed,
    "dropped_during_hold": sum(d["dropped_during_hold"] for d in done),
    "connects_per_s": connected / secs if secs else 0, "connect_secs": secs,
    "rss_before_kib": before, "rss_after_kib": after, "server_alive": alive,
    "rss_per_conn_kib": (after - before) / connected if connected and alive else None,
    "first_error": errors[0] if errors else None,
}
if mm_before and mm_after and connected:
    res["memory_per_conn_kib"] = {k: (mm_after[k] - mm_before[k]) / connected for k in mm_after if k != "mappings"}
    res["mappings_before_after"] = [mm_before["mappings"], mm_after["mappings"]]
if len(done) < len(sys.argv[7:]):
    res["error"] = "a client process did not finish"
json.dump(res, open(out, "w"))
EOF
}

# hibidle: idle chat sockets, hibernated on Switchyard.
BENCH_ADMIN_TOKEN=bench-admin-token-0123456789
hibernated_now() {
    curl -s -H "Authorization: Bearer $BENCH_ADMIN_TOKEN" "http://127.0.0.1:$1/_switchyard/metrics" |
        awk '/^switchyard_connections_hibernated / {print $2}'
}
# wait_hibernated KIND PORT N: until N connections hibernate (Switchyard;
# 60 s at most), or for the hibernation delay and a second (Daphne).
wait_hibernated() {
    [ "$1" = switchyard ] || { sleep $((HIBERNATE_SECS + 1)); return; }
    local deadline=$((SECONDS + 60))
    while [ $SECONDS -lt $deadline ]; do
        [ "$(hibernated_now "$2")" -ge "$3" ] 2>/dev/null && return 0
        sleep 0.5
    done
    echo "only $(hibernated_now "$2") of $3 connections hibernated" >&2
}
scenario_hibidle() {
    local kind=$1 conns=$2 out=$RAW/$1-hibidle-$2.json
    say "$kind: $conns idle chat connections (hibernate after ${HIBERNATE_SECS}s)"
    local plugins=$PLUGINS
    if [ "$kind" = switchyard ]; then
        plugins=$WORK/hib-plugins
        mkdir -p "$plugins"
        cp "$PLUGINS/chat.wasm" "$plugins/chat.wasm"
        printf 'routes = ["ws/chat/<str:room_name>/"]\nhibernate-after-secs = %s\n' "$HIBERNATE_SECS" >"$plugins/chat.toml"
    fi
    SWITCHYARD_ADMIN_TOKEN=$BENCH_ADMIN_TOKEN start "$kind" memory "$WORK/$kind-hibidle-$conns.log" "$plugins" ||
        { error_json "$out" hibidle "server did not start: $SRV_ERROR"; return; }
    local pid=$SRV_PID port=$SRV_PORT url
    url=$(URL "$SRV_PORT" /ws/chat/bench/)
    timeout 30 "$BIN/loadgen" churn --url "$url" --workers 2 --secs 0.5 >/dev/null 2>&1
    sleep 1
    local before
    before=$(rss_kib "$pid")
    hold_idle "$url" "$conns" "hibidle-$kind-$conns" 400
    wait_hibernated "$kind" "$port" "$conns"
    sleep 2
    local after alive=1 asleep
    after=$(rss_kib "$pid" 2>/dev/null) || alive=0
    [ -z "$after" ] && alive=0
    asleep=$(hibernated_now "$port")
    # The first call after idling: WAKE_CONNS more sockets, each alone.
    local go=$WORK/hibgo-$kind-$conns
    rm -f "$go"
    "$BIN/loadgen" wake --url "$(URL "$port" /ws/chat/)" --conns "$WAKE_CONNS" --go-file "$go" \
        >"$WORK/hibwake-$kind-$conns.out" 2>"$WORK/hibwake-$kind-$conns.err" &
    local wake_pid=$!
    PIDS+=("$wake_pid")
    for _ in $(seq 600); do grep -q '"phase": *"connected"' "$WORK/hibwake-$kind-$conns.out" 2>/dev/null && break; sleep 0.2; done
    wait_hibernated "$kind" "$port" $((conns + WAKE_CONNS))
    touch "$go"
    wait "$wake_pid"
    release_idle
    python3 - "$out" "$conns" "${before:-0}" "${after:-0}" "$alive" "${asleep:-}" "$WORK/hibwake-$kind-$conns.out" "$WORK"/hibidle-"$kind"-"$conns"-*.out <<'EOF'
import json, sys
out, conns, before, after, alive, asleep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1", sys.argv[6]
done = []
for path in sys.argv[8:]:
    lines = [l for l in open(path).read().splitlines() if l.startswith("{")]
    done += [json.loads(l) for l in lines if '"phase":"done"' in l]
wake = [json.loads(l) for l in open(sys.argv[7]).read().splitlines() if '"phase":"done"' in l]
connected = sum(d["connected"] for d in done)
res = {
    "scenario": "hibidle", "conns": conns, "connected": connected, "failed": conns - connected,
    "dropped_during_hold": sum(d["dropped_during_hold"] for d in done),
    "hibernated_at_measure": int(asleep) if asleep.isdigit() else None,
    "rss_before_kib": before, "rss_after_kib": after, "server_alive": alive,
    "rss_per_conn_kib": (after - before) / connected if connected and alive else None,
    "wake": wake[0] if wake else None,
}
json.dump(res, open(out, "w"))
EOF
    stop "$pid"
}

scenario_churn() {
    local kind=$1 out=$RAW/$1-churn.json
    say "$kind: churn, $CHURN_WORKERS workers, ${CHURN_SECS}s"
    start "$kind" memory "$WORK/$kind-churn.log" || { error_json "$out" churn "server did not start: $SRV_ERROR"; return; }
    local srcs=() i
    for i in $(seq 40 47); do srcs+=(--src "127.0.0.$i"); done
    loadgen_to "$out" $((CHURN_SECS + 60)) churn --url "$(URL "$SRV_PORT" "$(echo_path "$kind")")" \
        --workers "$CHURN_WORKERS" --secs "$CHURN_SECS" "${srcs[@]}"
    stop "$SRV_PID"
}

scenario_http() {
    local kind=$1 out=$RAW/$1-http.json
    say "$kind: http, $HTTP_CONNS keep-alive connections, ${HTTP_SECS}s"
    start "$kind" memory "$WORK/$kind-http.log" || { error_json "$out" http "server did not start: $SRV_ERROR"; return; }
    if ! timeout $((HTTP_SECS + 60)) "$BIN/httpload" --url "http://127.0.0.1:$SRV_PORT/api/hello/bench/" \
        --conns "$HTTP_CONNS" --secs "$HTTP_SECS" >"$out.tmp" 2>"$out.err"; then
        error_json "$out" http "httpload failed: $(tail -3 "$out.err" | tr '\n' ' ')"
    else
        tail -1 "$out.tmp" >"$out"
    fi
    stop "$SRV_PID"
}

# lang: the tutorial chat in Rust (plugins/chat), Python (plugins/chat_py)
# and JavaScript (plugins/chat_js), each alone in a plugin directory, in both
# instance modes, beside Daphne running the tutorial ChatConsumer.
now_ms() { date +%s%3N; }

# lang_dir PLUGIN MODE: prints a new plugin directory holding only PLUGIN,
# its manifest's instance mode set to MODE (per-connection or shared).
lang_dir() {
    local dir=$WORK/lang/$1-$2
    mkdir -p "$dir"
    cp "$PLUGINS/$1.wasm" "$dir/$1.wasm"
    # Top-level keys come before any [table] of the manifest.
    { printf 'instance = "%s"\n' "$2"; grep -v '^instance *=' "$PLUGINS/$1.toml"; } >"$dir/$1.toml"
    echo "$dir"
}

# chat_prefix PLUGIN: the URL prefix of its first route, `ws/chat-py/<...>/`
# -> /ws/chat-py/.
chat_prefix() { sed -n 's|^routes = \["\(ws/[^<"]*\)<.*|/\1|p' "$PLUGINS/$1.toml" | head -1; }

# kv_json FILE KEY=VALUE...: one JSON object; numbers stay numbers, empty
# values are null.
kv_json() {
    python3 - "$@" <<'EOF'
import json, sys
res = {}
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    try:
        res[k] = int(v)
    except ValueError:
        res[k] = v or None
json.dump(res, open(sys.argv[1], "w"))
EOF
}

# lang_rtt KIND URL_PREFIX OUT [PLUGIN_DIR]: closed loop, LANG_CONNS clients
# each alone in its own room, each awaiting its own broadcast back.
lang_rtt() {
    local kind=$1 prefix=$2 out=$3 plugins=${4:-$PLUGINS}
    start "$kind" memory "$WORK/lang/$(basename "$out" .json).log" "$plugins" || { error_json "$out" echo "server did not start: $SRV_ERROR"; return; }
    loadgen_to "$out" $((LANG_SECS + 120)) echo --url "$(URL "$SRV_PORT" "$prefix")" --rooms \
        --conns "$LANG_CONNS" --secs "$LANG_SECS"
    stop "$SRV_PID"
}

# lang_idle KIND URL_PREFIX OUT [PLUGIN_DIR]: RSS of LANG_IDLE idle members of one room.
lang_idle() {
    local kind=$1 prefix=$2 out=$3 plugins=${4:-$PLUGINS}
    start "$kind" memory "$WORK/lang/$(basename "$out" .json).log" "$plugins" || { error_json "$out" idle "server did not start: $SRV_ERROR"; return; }
    idle_rss "$SRV_PID" "$(URL "$SRV_PORT" "${prefix}idle/")" "$LANG_IDLE" "$out" "$(basename "$out" .json)"
    stop "$SRV_PID"
}

scenario_lang() {
    local dir=$RAW/lang p mode prefix default t0 cold_ms cold_rss compile_ms
    mkdir -p "$dir"
    for p in $LANG_PLUGINS; do
        [ -f "$PLUGINS/$p.wasm" ] || { error_json "$dir/$p-build.json" lang "missing $PLUGINS/$p.wasm"; continue; }
        prefix=$(chat_prefix "$p")
        default=$(sed -n 's/^instance *= *"\(.*\)".*/\1/p' "$PLUGINS/$p.toml")
        default=${default:-per-connection}
        lang_dir "$p" per-connection >/dev/null
        lang_dir "$p" shared >/dev/null
        say "lang $p: cold start (no .cwasm, empty compile cache)"
        cold_ms="" cold_rss="" compile_ms=""
        t0=$(now_ms)
        if XDG_CACHE_HOME=$WORK/lang/cache-$p start switchyard memory "$WORK/lang/$p-cold.log" "$WORK/lang/$p-$default"; then
            cold_ms=$(($(now_ms) - t0))
            cold_rss=$(rss_kib "$SRV_PID")
            stop "$SRV_PID"
        fi
        say "lang $p: switchyard compile"
        t0=$(now_ms)
        if "$BIN/switchyard" compile --plugins "$WORK/lang/$p-shared" >"$WORK/lang/$p-compile.log" 2>&1; then
            compile_ms=$(($(now_ms) - t0))
            cp "$WORK/lang/$p-shared/$p.cwasm" "$WORK/lang/$p-per-connection/$p.cwasm"
        fi
        kv_json "$dir/$p-build.json" plugin="$p" route="$prefix" default_mode="$default" \
            size_bytes="$(stat -c %s "$PLUGINS/$p.wasm")" compile_ms="$compile_ms" \
            cold_start_ms="$cold_ms" cold_rss_kib="$cold_rss"
        for mode in per-connection shared; do
            say "lang $p ($mode): warm start (.cwasm)"
            t0=$(now_ms)
            if start switchyard memory "$WORK/lang/$p-$mode-warm.log" "$WORK/lang/$p-$mode"; then
                kv_json "$dir/$p-$mode-warm.json" start_ms=$(($(now_ms) - t0)) rss_kib="$(rss_kib "$SRV_PID")"
                stop "$SRV_PID"
            else
                error_json "$dir/$p-$mode-warm.json" lang "server did not start: $SRV_ERROR"
            fi
            say "lang $p ($mode): round trips, $LANG_CONNS clients in their own rooms, ${LANG_SECS}s"
            lang_rtt switchyard "$prefix" "$dir/$p-$mode-rtt.json" "$WORK/lang/$p-$mode"
            say "lang $p ($mode): RSS of $LANG_IDLE idle members"
            lang_idle switchyard "$prefix" "$dir/$p-$mode-idle.json" "$WORK/lang/$p-$mode"
        done
        # Fan-out in the mode the plugin ships with: 1,000 per-connection
        # interpreters would take gigabytes.
        scenario_fanout switchyard memory "${prefix}bench/" "$dir/$p-fanout.json" "$WORK/lang/$p-$default"
    done
    if [[ " $SERVERS " == *" daphne "* ]]; then
        say "lang daphne: round trips, $LANG_CONNS clients in their own rooms, ${LANG_SECS}s"
        lang_rtt daphne /ws/chat/ "$dir/daphne-rtt.json"
        say "lang daphne: RSS of $LANG_IDLE idle members"
        lang_idle daphne /ws/chat/ "$dir/daphne-idle.json"
        scenario_fanout daphne memory /ws/chat/bench/ "$dir/daphne-fanout.json"
    fi
}

# TLS echo vs plain echo vs the bare axum ceiling with TLS: the echo
# scenario against four servers in turn, the same client (wss:// trusting
# the CA tlscert made).
scenario_tls() {
    TLS_DIR=$WORK/tls
    local raw=$WORK/tls-raw kind url out
    mkdir -p "$raw"
    "$BIN/tlscert" "$TLS_DIR" >/dev/null || { echo "tlscert failed" >&2; return; }
    for kind in switchyard-tls switchyard ceiling-tls ceiling; do
        out=$raw/$kind.json
        say "tls: $kind echo, $ECHO_CONNS connections, ${ECHO_SECS}s"
        start "$kind" memory "$WORK/tls-$kind.log" || { error_json "$out" echo "server did not start: $SRV_ERROR"; continue; }
        url="ws://127.0.0.1:$SRV_PORT/ws/echo/"
        [[ $kind == *-tls ]] && url="wss://127.0.0.1:$SRV_PORT/ws/echo/"
        loadgen_to "$out" $((ECHO_SECS + 60)) --ca-file "$TLS_DIR/ca.pem" echo --url "$url" \
            --conns "$ECHO_CONNS" --secs "$ECHO_SECS"
        stop "$SRV_PID"
    done
    mkdir -p "$ROOT/bench/results"
    python3 "$ROOT/bench/tls_report.py" "$raw" "$ROOT/bench/results/$(date -u +%Y-%m-%d)-tls.json" \
        "$RUN_DATE" "echo_conns=$ECHO_CONNS echo_secs=$ECHO_SECS load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
}

# ---------------------------------------------------------------- run
STARTED=$SECONDS
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
has() { [[ " $SCENARIOS " == *" $1 "* ]]; }
for kind in $SERVERS; do
    has echo && scenario_echo "$kind"
    # Fan-out runs the chat plugin: one Switchyard row is enough.
    if [ "$kind" != switchyard-shared ]; then
        has fanout && scenario_fanout "$kind" memory
        has fanout && [ "$kind" != ceiling ] && scenario_fanout "$kind" redis
    fi
    if has idle; then for n in $IDLE_SIZES; do scenario_idle "$kind" "$n"; done; fi
    if has hibidle && [[ $kind == switchyard || $kind == daphne ]]; then
        for n in $HIBIDLE_SIZES; do scenario_hibidle "$kind" "$n"; done
    fi
    has churn && scenario_churn "$kind"
    # One Switchyard row: the HTTP side has no shared-instance variant.
    has http && [ "$kind" != switchyard-shared ] && scenario_http "$kind"
done
has lang && scenario_lang
has tls && scenario_tls
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# Only the tls scenario ran: no suite table (it would be empty).
[ -z "$(ls -A "$RAW")" ] && { echo "raw results and server logs: $WORK" >&2; exit 0; }
mkdir -p "$ROOT/bench/results" "$ROOT/docs"
OUT_JSON=$ROOT/bench/results/$(date -u +%Y-%m-%d).json
python3 "$ROOT/bench/report.py" --raw "$RAW" --out "$OUT_JSON" --svg "$ROOT/docs/bench.svg" \
    --date "$RUN_DATE" --load-before "$LOAD_BEFORE" --load-after "$LOAD_AFTER" \
    --secs $((SECONDS - STARTED)) \
    --params "sy_redis_workers=$SY_REDIS_WORKERS echo_conns=$ECHO_CONNS echo_secs=$ECHO_SECS fanout_subs=$FANOUT_SUBS fanout_rate=$FANOUT_RATE fanout_secs=$FANOUT_SECS idle_sizes=${IDLE_SIZES// /,} churn_workers=$CHURN_WORKERS churn_secs=$CHURN_SECS http_conns=$HTTP_CONNS http_secs=$HTTP_SECS lang_plugins=${LANG_PLUGINS// /,} lang_conns=$LANG_CONNS lang_secs=$LANG_SECS lang_idle=$LANG_IDLE vm.max_map_count=$(cat /proc/sys/vm/max_map_count)"
echo "raw results and server logs: $WORK" >&2
