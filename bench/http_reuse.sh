#!/usr/bin/env bash
# bench/http_reuse.sh: the per-request cost of a fresh instance vs a reused
# one. Runs the `hello` plugin's JSON view (GET /api/hello/bench/) through
# Switchyard twice, with the same client (target/release/httpload) and the
# same component, the manifest differing only in `[http] reuse-instances`:
#
#   fresh    reuse-instances = false (a new store and instance per request)
#   reused   reuse-instances = true  (an idle instance per request)
#
# Prints requests/s, p50 and p99 of each, the microseconds per request
# (1e6 / requests/s, with HTTP_CONNS in flight), and writes
# bench/results/<UTC date>-http-reuse.json. Needs the release build and the
# example plugins (cargo build --release -p switchyard -p switchyard-bench;
# cargo xtask plugins). Benchmarks are not tests: nothing here asserts a
# timing.
#
# Knobs (environment): HTTP_CONNS=50, HTTP_SECS=10, ROUNDS=2 (fresh, reused,
# fresh, reused, ...), BIN (default target/release).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
HTTP_CONNS=${HTTP_CONNS:-50}
HTTP_SECS=${HTTP_SECS:-10}
ROUNDS=${ROUNDS:-2}
BIN=${BIN:-$ROOT/target/release}
die() { printf 'bench/http_reuse.sh: %s\n' "$*" >&2; exit 1; }
for b in switchyard httpload; do [ -x "$BIN/$b" ] || die "missing $BIN/$b"; done
[ -f "$ROOT/target/plugins/hello.wasm" ] || die "missing target/plugins/hello.wasm (cargo xtask plugins)"

WORK=$(mktemp -d /tmp/switchyard-http-reuse.XXXXXX)
SRV_PID=""
cleanup() { [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null; }
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# One plugin directory per mode: the hello component, its routes, reuse on
# or off.
for mode in fresh reused; do
    mkdir -p "$WORK/$mode"
    cp "$ROOT/target/plugins/hello.wasm" "$WORK/$mode/hello.wasm"
    reuse=false
    [ "$mode" = reused ] && reuse=true
    sed '/^\[http\]/,$d' "$ROOT/plugins/hello/hello.toml" >"$WORK/$mode/hello.toml"
    printf '[http]\nreuse-instances = %s\n' "$reuse" >>"$WORK/$mode/hello.toml"
done

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$ROUNDS"); do
    for mode in fresh reused; do
        port=$(free_port)
        RUST_LOG=warn REDIS_URL= "$BIN/switchyard" serve -b 127.0.0.1 -p "$port" \
            --plugins "$WORK/$mode" >"$WORK/$mode-$round.log" 2>&1 &
        SRV_PID=$!
        up=""
        for _ in $(seq 300); do
            kill -0 "$SRV_PID" 2>/dev/null || break
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=1; break; fi
            sleep 0.1
        done
        [ -n "$up" ] || die "server did not start: $(tail -3 "$WORK/$mode-$round.log")"
        # A first request compiles nothing (the cache) but loads the plugin.
        printf '== round %s: %s, %s connections, %ss\n' "$round" "$mode" "$HTTP_CONNS" "$HTTP_SECS" >&2
        timeout $((HTTP_SECS + 60)) "$BIN/httpload" --url "http://127.0.0.1:$port/api/hello/bench/" \
            --conns "$HTTP_CONNS" --secs "$HTTP_SECS" >"$WORK/$mode-$round.out" 2>"$WORK/$mode-$round.err" \
            || die "httpload failed: $(tail -3 "$WORK/$mode-$round.err")"
        tail -1 "$WORK/$mode-$round.out" >"$WORK/$mode-$round.json"
        kill "$SRV_PID" 2>/dev/null
        wait "$SRV_PID" 2>/dev/null
        SRV_PID=""
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p "$ROOT/bench/results"
OUT=$ROOT/bench/results/$(date -u +%Y-%m-%d)-http-reuse.json
python3 - "$WORK" "$ROUNDS" "$OUT" "$LOAD_BEFORE" "$LOAD_AFTER" "$HTTP_CONNS" "$HTTP_SECS" <<'EOF'
import json, sys, datetime
work, rounds, out, before, after, conns, secs = sys.argv[1:8]
runs = []
for r in range(1, int(rounds) + 1):
    for mode in ("fresh", "reused"):
        with open(f"{work}/{mode}-{r}.json") as f:
            raw = json.load(f)
        runs.append({"round": r, "mode": mode, "raw": raw})
print(f"{'round':>5} {'mode':<7} {'req/s':>9} {'us/req':>7} {'p50':>9} {'p99':>9} {'not_ok':>6}")
for run in runs:
    raw = run["raw"]
    rps = raw["requests_per_s"]
    lat = raw["latency"]
    print(f"{run['round']:>5} {run['mode']:<7} {rps:>9,.0f} {1e6 / rps:>7.1f} "
          f"{lat['p50_us'] / 1000:>7.2f}ms {lat['p99_us'] / 1000:>7.2f}ms {raw['not_ok']:>6}")
doc = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "what": "hello plugin GET /api/hello/bench/, fresh instance per request vs reused instances",
    "load_average_before": before,
    "load_average_after": after,
    "params": f"http_conns={conns} http_secs={secs} rounds={rounds}",
    "runs": runs,
}
with open(out, "w") as f:
    json.dump(doc, f, indent=1, sort_keys=True)
    f.write("\n")
print(f"wrote {out}", file=sys.stderr)
EOF
