#!/usr/bin/env bash
# Run the Autobahn|Testsuite (RFC 6455 conformance, fuzzingclient mode) against
# Switchyard's echo endpoint and summarise the results.
#
# Usage:  tests/autobahn/run.sh [/path/to/switchyard [/path/to/plugins-dir]]
#         (defaults: target/release/switchyard and target/plugins, as built by
#         `cargo build --release -p switchyard` and `cargo xtask plugins`)
#
# Not part of `cargo xtask test`: the suite runs only on Python 2.7, which
# Debian no longer ships (here it comes from pyenv). See docs/development.md.
#
# Environment (all optional):
#   WORKDIR   where the venv, spec, logs and reports go   [default: target/autobahn]
#   PORT      port the server binds on 127.0.0.1          [default: 9001]
#   PYTHON27  a CPython 2.7 interpreter                   [default: first of pyenv 2.7.*, python2.7, python2]
#   STRICT=1  exit non-zero if a case other than those in EXPECT_FAIL is not
#             OK / NON-STRICT / INFORMATIONAL (for CI)
#   CASES     JSON list of case ids to run               [default: ["*"]]
#   EXCLUDE_CASES  JSON list of case ids to leave out    [default: 9.3-9.8
#             (performance), 12 and 13 (permessage-deflate)]
#   SWITCHYARD_CONFIG  a config file for the server, e.g. one with
#             `[websocket] permessage-deflate = true` for cases 12 and 13
#   EXPECT_FAIL  space-separated case ids allowed to fail [default: 9.1.4-9.1.6
#             9.2.4-9.2.6: 4/8/16 MiB echoes, over Switchyard's 1 MiB limit, which
#             it rightly closes with 1009]
#
# The plugins dir must hold the echo consumer (echo.wasm + echo.toml with
# routes = ["ws/echo/"]). Traffic goes to 127.0.0.1 only.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${1:-$ROOT/target/release/switchyard}
PLUGINS=${2:-$ROOT/target/plugins}
WORKDIR=${WORKDIR:-$ROOT/target/autobahn}
PORT=${PORT:-9001}
CASES=${CASES:-'["*"]'}
EXCLUDE_CASES=${EXCLUDE_CASES:-'["9.3.*", "9.4.*", "9.5.*", "9.6.*", "9.7.*", "9.8.*", "12.*", "13.*"]'}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
PLUGINS=$(cd "$PLUGINS" && pwd)
mkdir -p "$WORKDIR"
cd "$WORKDIR"

# --- 1. Python 2.7 virtualenv with pinned autobahntestsuite -------------------
if [ ! -x venv/bin/wstest ]; then
  if [ -z "${PYTHON27:-}" ]; then
    for c in /root/.pyenv/versions/2.7.*/bin/python "$(command -v python2.7 || true)" "$(command -v python2 || true)"; do
      [ -n "$c" ] && [ -x "$c" ] && { PYTHON27=$c; break; }
    done
  fi
  : "${PYTHON27:?no Python 2.7 found; set PYTHON27}"
  "$PYTHON27" -m virtualenv --version >/dev/null 2>&1 || "$PYTHON27" -m pip install -q 'virtualenv==20.15.1'
  "$PYTHON27" -m virtualenv -q venv
  REQ="$HERE/requirements-py27.txt"
  if [ -f "$REQ" ]; then
    venv/bin/pip install -q -r "$REQ"
  else
    venv/bin/pip install -q 'autobahntestsuite==25.10.1'
  fi
fi

# --- 2. start the server -------------------------------------------------------
rm -rf reports
: > server.log
"$BIN" serve --plugins "$PLUGINS" --bind 127.0.0.1 --port "$PORT" >server.log 2>&1 &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q "plugins loaded" server.log && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited early:"; cat server.log; exit 1; }
  sleep 0.1
done
grep -q "plugins loaded" server.log || { echo "server did not start:"; cat server.log; exit 1; }

# --- 3. run the suite ----------------------------------------------------------
cat > spec.json <<EOF
{
  "outdir": "./reports",
  "servers": [{"agent": "switchyard", "url": "ws://127.0.0.1:${PORT}/ws/echo/"}],
  "cases": ${CASES},
  "exclude-cases": ${EXCLUDE_CASES},
  "exclude-agent-cases": {}
}
EOF
START=$(date +%s)
timeout 1800 venv/bin/wstest -m fuzzingclient -s spec.json >wstest.log 2>&1 || { echo "wstest failed (rc=$?), see wstest.log"; tail -20 wstest.log; exit 1; }
echo "suite took $(( $(date +%s) - START )) s"

# --- 4. summary ----------------------------------------------------------------
EXPECT_FAIL=${EXPECT_FAIL-9.1.4 9.1.5 9.1.6 9.2.4 9.2.5 9.2.6} \
venv/bin/python - "${STRICT:-0}" <<'EOF'
import json, sys, os, collections
expect = set(os.environ.get("EXPECT_FAIL", "").split())
idx = json.load(open("reports/index.json"))
res = idx["switchyard"]
def key(c): return [int(x) for x in c.split(".")]
tot = collections.Counter(v["behavior"] for v in res.values())
print("cases: %d  %s" % (len(res), "  ".join("%s=%d" % kv for kv in sorted(tot.items()))))
bad = 0
unexpected = []
for c in sorted(res, key=key):
    v = res[c]
    if v["behavior"] not in ("OK", "NON-STRICT", "INFORMATIONAL"):
        bad += 1
        if c not in expect: unexpected.append(c)
        d = json.load(open("reports/" + v["reportfile"]))
        print("%-8s %-14s close=%-14s %s | %s" % (c, v["behavior"], v["behaviorClose"], d.get("result"), d.get("resultClose")))
print("%d passed, %d failed" % (len(res) - bad, bad))
print("unexpected: %s" % (" ".join(unexpected) or "none"))
sys.exit(1 if (sys.argv[1] == "1" and unexpected) else 0)
EOF
