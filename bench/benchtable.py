#!/usr/bin/env python3
"""Side-by-side markdown table of a results TSV written by bench/benchlib.sh's run_step.

  benchtable.py RESULTS_TSV TOOL...     one row per step (in order of first appearance), and for
                                        each TOOL the wall seconds, CPU seconds and peak RSS (MiB)

Rows are "step, tool, status, wall, user, sys, peak RSS KiB". A step a tool did not run shows
"-"; a failed one shows its status. Rows recorded without CPU and memory (record in benchlib.sh)
show only the wall time.
"""

import sys


def main(path, tools):
    steps, cells = [], {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 7:
                continue
            step, tool, status, wall, user, sys_, rss = parts
            if step not in steps:
                steps.append(step)
            if status != "ok":
                cells[step, tool] = (status, "", "")
                continue
            cpu = float(user) + float(sys_)
            rss = int(rss)
            cells[step, tool] = (f"{float(wall):.2f}", f"{cpu:.2f}" if rss else "", f"{(rss + 512) // 1024}" if rss else "")
    head = ["step"]
    for t in tools:
        head += [f"{t} wall s", f"{t} CPU s", f"{t} peak MiB"]
    print("| " + " | ".join(head) + " |")
    print("| --- |" + " ---: |" * (3 * len(tools)))
    for step in steps:
        row = [step]
        for t in tools:
            row += list(cells.get((step, t), ("-", "", "")))
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1], sys.argv[2:])
