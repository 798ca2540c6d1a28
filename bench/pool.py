#!/usr/bin/env python3
"""Pools the rounds of several bench/run.sh runs into one set of steady/peer ratios.

    bench/pool.py bench/results/bench-A.json bench/results/bench-B.json ...

One run's five rounds on a shared VM swing by a third either way; the per-round ratios
of several runs, taken together, say more. For each peer: the median and geometric
mean of the per-round CPU ratios (closed loop, and at the constant rate) with how many
rounds were at or below 1, and the rounds where steady's added p99 (its p99 less the
same round's direct p99) was at or below the peer's.
"""
import json
import statistics
import sys


def main(paths):
    if not paths:
        sys.exit(__doc__)
    rounds = []
    for path in paths:
        with open(path) as f:
            rounds += json.load(f)["rounds"]
    peers = sorted({k for r in rounds for k in r} - {"direct", "steady"})
    print(f"{len(rounds)} rounds from {len(paths)} run(s)\n")
    print("| ratio | CPU µs/req closed: median (geo mean), rounds ≤ 1 "
          "| CPU µs/req @rate: median (geo mean), rounds ≤ 1 "
          "| added p99 @rate: median ratio, rounds at or below |")
    print("|---|---|---|---|")
    for peer in peers:
        both = [r for r in rounds if peer in r and "steady" in r and "direct" in r]
        cells = []
        for phase in ("wrk", "oha"):
            ratios = [r["steady"][phase]["proxy_cpu_us_per_req"]
                      / r[peer][phase]["proxy_cpu_us_per_req"] for r in both]
            below = sum(x <= 1 for x in ratios)
            cells.append(f"{statistics.median(ratios):.2f}x "
                         f"({statistics.geometric_mean(ratios):.2f}x), {below} of {len(ratios)}")
        added = [(r["steady"]["oha"]["p99_us"] - r["direct"]["oha"]["p99_us"],
                  r[peer]["oha"]["p99_us"] - r["direct"]["oha"]["p99_us"]) for r in both]
        ratio = (statistics.median(a for a, _ in added)
                 / statistics.median(b for _, b in added))
        below = sum(a <= b for a, b in added)
        cells.append(f"{ratio:.2f}x, {below} of {len(added)}")
        print(f"| steady/{peer} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
