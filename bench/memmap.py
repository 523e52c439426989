#!/usr/bin/env python3
"""Where a server's resident memory is: `memmap.py PID` prints one JSON
object with the KiB of RSS (and PSS) by kind of mapping, from
/proc/PID/smaps. bench/run.sh takes it before and after the idle
connections, so the per-connection cost can be split into wasm linear
memory and pool slots (the biggest anonymous reservation: the pooling
allocator's), the malloc heap, and file-backed pages (memory images are
copy-on-write files: counted in RSS once per mapping, in PSS once).
"""

import json
import sys


def main():
    pid = sys.argv[1]
    maps = []
    cur = None
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            if "-" in parts[0] and not parts[0].endswith(":"):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                cur = {"size": (hi - lo) // 1024, "name": parts[5] if len(parts) > 5 else "",
                       "Rss": 0, "Pss": 0, "Anonymous": 0}
                maps.append(cur)
            elif cur is not None and parts[0].rstrip(":") in ("Rss", "Pss", "Anonymous"):
                cur[parts[0].rstrip(":")] = int(parts[1])
    # The pooling allocator reserves one huge region (often split into many
    # mappings with different protections); count every anonymous mapping
    # inside the 8 largest-span groups as "pool". Simpler and robust: any
    # anonymous, unnamed mapping of at least 1 GiB virtual, plus the small
    # mappings carved out of it, cannot be told apart cheaply, so split by
    # size of mapping instead.
    out = {"rss_kib": 0, "pss_kib": 0, "anon_kib": 0, "file_kib": 0,
           "heap_kib": 0, "big_anon_kib": 0, "small_anon_kib": 0, "mappings": len(maps)}
    for m in maps:
        out["rss_kib"] += m["Rss"]
        out["pss_kib"] += m["Pss"]
        out["anon_kib"] += m["Anonymous"]
        if m["name"].startswith("/") or m["name"].startswith("/memfd:"):
            out["file_kib"] += m["Rss"] - m["Anonymous"]
        if m["name"] == "[heap]":
            out["heap_kib"] += m["Rss"]
        elif not m["name"] or m["name"].startswith("[anon"):
            if m["size"] >= 256 * 1024:
                out["big_anon_kib"] += m["Rss"]
            else:
                out["small_anon_kib"] += m["Rss"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
