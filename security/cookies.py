"""The Cookie header, parsed in linear time and bounded in length.

``http.cookies.SimpleCookie`` has a quadratic case on quoted values full of backslashes
(CVE-2024-7592 on Python 3.11.7): a 15 KB header takes seconds on the event loop. The owner cookie is
a plain token, so this parser only splits on ``;`` and the first ``=`` and keeps values as sent.
"""

from __future__ import annotations

MAX_COOKIE_HEADER_BYTES = 8192  # all Cookie headers of one request together; browsers send far less


class CookieHeaderTooLarge(ValueError):
    pass


def cookie_pairs(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Every ``name=value`` pair of a request's Cookie headers, in order, duplicates kept."""
    raw = [value for name, value in headers if name == b"cookie"]
    if sum(len(value) for value in raw) > MAX_COOKIE_HEADER_BYTES:
        raise CookieHeaderTooLarge
    pairs = []
    for value in raw:
        for part in value.decode("latin-1").split(";"):
            name, sep, content = part.strip().partition("=")
            if sep and name:
                pairs.append((name, content.strip()))
    return pairs
