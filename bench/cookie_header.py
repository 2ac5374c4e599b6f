"""How long one pathological Cookie header holds the event loop: SimpleCookie vs the guard's parser.

    python bench/cookie_header.py [--quick]

A 15 KB quoted value full of backslashes is CVE-2024-7592's quadratic case in ``http.cookies`` on
Python 3.11.7. The guard refuses any Cookie header over ``MAX_COOKIE_HEADER_BYTES`` before parsing, and
parses the rest by splitting, so its cost is linear and tiny either way.
"""

from __future__ import annotations

import argparse
import sys
import time
from http.cookies import SimpleCookie
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from security.cookies import MAX_COOKIE_HEADER_BYTES, CookieHeaderTooLarge, cookie_pairs  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def guard_parse(header: bytes) -> None:
    try:
        cookie_pairs([(b"cookie", header)])
    except CookieHeaderTooLarge:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller headers (for CI)")
    args = parser.parse_args()
    sizes = (2_000, 4_000) if args.quick else (4_000, 8_000, 15_000)
    print(f"{'header bytes':>12} {'SimpleCookie s':>15} {'guard parser s':>15}")
    for size in sizes:
        header = 'a="' + "\\" * size + '"'
        simple = timed(lambda: SimpleCookie().load(header))
        ours = timed(lambda: guard_parse(header.encode("latin-1")))
        print(f"{size:>12} {simple:>15.4f} {ours:>15.6f}")
    print(f"(the guard refuses Cookie headers over {MAX_COOKIE_HEADER_BYTES} bytes with 431 before parsing)")


if __name__ == "__main__":
    main()
