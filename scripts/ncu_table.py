"""scripts/ncu_table.py CSV [STEPS]: the per-kernel table of an ncu run.

CSV is the output of
    ncu --clock-control none --metrics gpu__time_duration.sum --csv PROGRAM ...
(one row per kernel launch). Prints each kernel's total time, divided by STEPS (default 1,
e.g. the training steps the program ran), its launches and mean duration, the longest
first, and the total: the table docs/ keeps beside a profile's commit and command."""
import csv, sys
from collections import defaultdict


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    steps = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3,
             "second": 1e6, "s": 1e6}
    total, calls, grid = defaultdict(float), defaultdict(int), {}
    with open(sys.argv[1], newline="", errors="replace") as f:
        lines = [l for l in f if l.startswith('"')]   # ncu's own log lines are not CSV
    for row in csv.DictReader(lines):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        name = row["Kernel Name"]
        us = float(row["Metric Value"].replace(",", "")) * scale.get(row["Metric Unit"], 1.0)
        total[name] += us
        calls[name] += 1
        grid[name] = row.get("Grid Size", "")
    if not total:
        sys.exit("no gpu__time_duration.sum rows in " + sys.argv[1])
    all_us = sum(total.values())
    print(f"{'us/step':>9} {'share':>6} {'calls/step':>10} {'us/call':>9}  kernel (grid)")
    for name in sorted(total, key=total.get, reverse=True):
        print(f"{total[name] / steps:9.0f} {100 * total[name] / all_us:5.1f}% {calls[name] / steps:10.1f} "
              f"{total[name] / calls[name]:9.1f}  {name[:70]} {grid[name]}")
    print(f"{all_us / steps:9.0f} 100.0%  total kernel time per step ({sum(calls.values()) / steps:.0f} launches)")


if __name__ == "__main__":
    main()
