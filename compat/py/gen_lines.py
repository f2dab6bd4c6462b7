#!/usr/bin/env python3
"""Writes --count lines "KEY:VALUE" (kcat -P -K: input) and, with --expect, the lines kcat -C should
print for them with -f '%k:%s:%h\\n' given the headers in --headers (e.g. "h1=v1,h2=two words")."""
import argparse

from kcommon import record


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--prefix", default="kc")
    ap.add_argument("--out", required=True)
    ap.add_argument("--expect", default=None)
    ap.add_argument("--headers", default="")
    a = ap.parse_args()
    with open(a.out, "wb") as f, open(a.expect or "/dev/null", "wb") as e:
        for i in range(a.count):
            k, v, _ = record(i, a.prefix)
            f.write(k + b":" + v + b"\n")
            if a.expect:
                e.write(k + b":" + v + b":" + a.headers.encode() + b"\n")


if __name__ == "__main__":
    main()
