"""Shared pieces of the compat Python clients: deterministic record content and small helpers.

Every script that uses these prints what it checks and exits 0 only when every check passed
(1 = a check failed, 2 = bad usage or the client library is missing).
"""
import random
import sys
import time


def record(i: int, prefix: str, binary: bool = False):
    """Deterministic (key, value, headers) for record number i. With binary=True the value holds
    every byte value 0..255 somewhere across records; otherwise it is printable ASCII without ':'."""
    rnd = random.Random(f"{prefix}/{i}")
    key = f"{prefix}-k{i:07d}".encode()
    n = rnd.randint(1, 300)
    if binary:
        value = bytes(rnd.randrange(256) for _ in range(n)) + i.to_bytes(4, "big")
    else:
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.,;!?/=+"
        value = f"{prefix}-v{i}-".encode() + "".join(rnd.choice(alphabet) for _ in range(n)).encode()
    headers = [("idx", str(i).encode()), ("src", prefix.encode())]
    return key, value, headers


def die(msg: str, code: int = 1):
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def say(msg: str):
    print(msg, flush=True)


class Deadline:
    """A wall-clock bound for a whole script: remaining() in seconds, expired() once past."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end


def norm_headers(h):
    """Normalises headers from any client to a list of (str, bytes)."""
    if not h:
        return []
    return [(k if isinstance(k, str) else k.decode(), bytes(v) if v is not None else None) for k, v in h]
