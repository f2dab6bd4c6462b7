#!/usr/bin/env python3
"""Checks the union of several group members' outputs against what a producer had acknowledged.

--acked: "partition offset key value" lines (keyed_producer.py); consumed files: the same format
(group_member.py --out). Every acknowledged record must have been consumed (no gaps), at the partition and
offset it was acknowledged at; a record consumed more than once is a duplicate. Prints
"acked=N consumed=N missing=N duplicates=N" plus the first few problems per key.
Exit 0 when nothing is missing, nothing unexpected was consumed, and duplicates <= --max-duplicates."""
import argparse
import collections
import sys


def read(path):
    out = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4:
                out.append((int(parts[0]), int(parts[1]), parts[2], parts[3]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--acked", required=True)
    ap.add_argument("--max-duplicates", type=int, default=0)
    ap.add_argument("consumed", nargs="+")
    a = ap.parse_args()
    acked = read(a.acked)
    want = {(k, v): (p, o) for p, o, k, v in acked}
    seen = collections.Counter()
    bad = []
    for path in a.consumed:
        for p, o, k, v in read(path):
            seen[(k, v)] += 1
            if want.get((k, v)) != (p, o):
                bad.append(f"{k} {v} consumed at {p}:{o}, acknowledged at {want.get((k, v))}")
    missing = [kv for kv in want if seen[kv] == 0]
    dups = {kv: n - 1 for kv, n in seen.items() if n > 1}
    ndup = sum(dups.values())
    print(f"acked={len(want)} consumed={sum(seen.values())} missing={len(missing)} duplicates={ndup} unexpected={len(bad)}")
    by_key = collections.defaultdict(list)
    for k, v in missing:
        by_key[k].append(v)
    for k in sorted(by_key)[:5]:
        print(f"  gap in {k}: {len(by_key[k])} missing, first {sorted(by_key[k])[:3]}")
    dkeys = collections.Counter(k for (k, _v) in dups)
    for k, n in sorted(dkeys.items())[:5]:
        print(f"  duplicates in {k}: {n}")
    for b in bad[:5]:
        print(f"  unexpected: {b}")
    ok = not missing and not bad and ndup <= a.max_duplicates and len(want) == len(acked)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
