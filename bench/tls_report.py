#!/usr/bin/env python3
"""The table of bench/run.sh's tls scenario: echo over wss:// and ws://,
Switchyard and the axum ceiling, from one run with the same client.
Standard library only.

Usage: tls_report.py RAW_DIR OUT_JSON DATE PARAMS
"""

import json
import os
import sys

ROWS = [("switchyard-tls", "Switchyard, wss://"), ("switchyard", "Switchyard, ws://"),
        ("ceiling-tls", "axum ceiling, wss://"), ("ceiling", "axum ceiling, ws://")]
RATIOS = [("Switchyard wss:// / ws://", "switchyard-tls", "switchyard"),
          ("Switchyard wss:// / ceiling wss://", "switchyard-tls", "ceiling-tls"),
          ("ceiling wss:// / ws://", "ceiling-tls", "ceiling")]


def main():
    raw, out, date, params = sys.argv[1:5]
    res = {}
    for kind, _ in ROWS:
        try:
            with open(os.path.join(raw, kind + ".json")) as f:
                res[kind] = json.load(f)
        except (OSError, ValueError) as e:
            res[kind] = {"error": str(e)}

    def rate(k):
        return res[k].get("messages_per_s")

    def q(k, p):
        v = (res[k].get("rtt") or {}).get(p)
        return float("nan") if v is None else v / 1000.0

    print(f"\nTLS echo ({params}), {date}")
    print(f"{'':24} {'msg/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'p999 ms':>8}")
    for kind, label in ROWS:
        if rate(kind) is None:
            print(f"{label:24} {res[kind].get('error', 'no result')}")
            continue
        print(f"{label:24} {rate(kind):>10.0f} {q(kind, 'p50_us'):>8.2f} "
              f"{q(kind, 'p99_us'):>8.2f} {q(kind, 'p999_us'):>8.2f}")
    ratios = {}
    for label, a, b in RATIOS:
        if rate(a) and rate(b):
            ratios[label] = rate(a) / rate(b)
            print(f"  {label}: {ratios[label]:.2f}x messages/s")
    with open(out, "w") as f:
        json.dump({"date": date, "params": params, "rows": res, "ratios": ratios}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
