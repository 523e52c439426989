#!/usr/bin/env bash
# Run every fuzz target for a bounded time; print each one's exec count.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, all)
#
# cargo-fuzz needs nightly-only rustc flags; on a stable toolchain they are
# unlocked with RUSTC_BOOTSTRAP=1. Install it with `cargo install cargo-fuzz`.
# A crash leaves its input in fuzz/artifacts/<target>/ and fails this script:
# fix it and add the input as a regression test beside the code.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(route_parse route_match event_json msgpack_json redis_entry)
fi

command -v cargo-fuzz >/dev/null || {
    echo "cargo-fuzz not found: cargo install cargo-fuzz" >&2
    exit 1
}
export RUSTC_BOOTSTRAP=1
status=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    log="$(mktemp)"
    if cargo fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result=FAILED
        status=1
    fi
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    echo "$target: $result, $execs execs in ${seconds}s"
    if [ "$result" = FAILED ]; then tail -n 40 "$log"; fi
    rm -f "$log"
done
exit $status
