"""Kill score per module from `mutmut results --all true` on stdin (`make mutation` pipes it in).

A mutant counts as killed when a test failed or timed out on it (mutmut's own badge does the same).
Exits 1 when any module is below --min-score percent, so CI can gate on it.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict

KILLED = ("killed", "timeout")


def scores(lines: list[str]) -> dict[str, Counter[str]]:
    """{module: Counter(status)} from lines like `    pipeline.images.x_decode_image__mutmut_3: survived`."""
    by_module: dict[str, Counter[str]] = defaultdict(Counter)
    for line in lines:
        name, separator, status = line.strip().partition(": ")
        if separator and "__mutmut_" in name:
            by_module[name.rsplit(".", 1)[0]][status.strip()] += 1
    return dict(by_module)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--min-score", type=float, default=0.0, help="fail below this percentage in any module")
    args = parser.parse_args(argv)
    by_module = scores(sys.stdin.read().splitlines())
    if not by_module:
        print("no mutmut results: run `mutmut run` first", file=sys.stderr)
        return 1
    print(f"{'module':<28} {'killed':>7} {'total':>6} {'score':>7}  not killed")
    below = []
    for module, counts in sorted(by_module.items()):
        killed = sum(counts[status] for status in KILLED)
        total = sum(counts.values())
        score = 100.0 * killed / total
        others = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()) if status not in KILLED)
        print(f"{module:<28} {killed:>7} {total:>6} {score:>6.1f}%  {others}")
        if score < args.min_score:
            below.append(module)
    if below:
        print(f"below {args.min_score}%: {', '.join(below)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
