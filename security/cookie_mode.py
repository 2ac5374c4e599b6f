"""Which owner cookie a request uses: a partitioned one where the browser accepts it, else first-party.

Current browsers refuse unpartitioned cookies in a cross-site frame (a Space inside huggingface.co, a
chat widget on another website). A CHIPS cookie - ``Secure; SameSite=None; Partitioned`` - is kept
there, keyed by the top-level site, and works top-level too. Browsers accept ``Secure`` cookies over
https and on loopback hosts, so:

* **partitioned** (``__Host-cmw_owner``): the request came over https (directly, through a proxy's
  ``X-Forwarded-Proto``, or on a Hugging Face Space, which is always https), or it is a browser
  (it sends ``Sec-Fetch-Site``) talking to a loopback host;
* **first-party** (``cmw_owner``, ``SameSite=Lax``): anything else - plain http on a LAN address,
  and non-browser clients over plain http (Python's cookie jar never sends a ``Secure`` cookie over http).

The ``__Host-`` prefix makes the browser refuse a cookie set with a ``Domain`` (a sibling subdomain
"tossing" one at the parent domain); in partitioned mode the plain name is ignored altogether.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from starlette.datastructures import Headers

COOKIE_NAME = "cmw_owner"
PARTITIONED_COOKIE_NAME = "__Host-cmw_owner"
COOKIE_MAX_AGE = 400 * 24 * 3600  # browsers cap cookie lifetime near 400 days


@dataclass(frozen=True)
class CookieMode:
    name: str
    partitioned: bool

    def set_cookie_header(self, token: str, same_site: str = "lax") -> str:
        attributes = f"{self.name}={token}; Path=/; Max-Age={COOKIE_MAX_AGE}; HttpOnly"
        if self.partitioned:
            return attributes + "; Secure; SameSite=None; Partitioned"
        return attributes + ("; SameSite=Strict" if same_site == "strict" else "; SameSite=Lax")


PARTITIONED = CookieMode(PARTITIONED_COOKIE_NAME, partitioned=True)
FIRST_PARTY = CookieMode(COOKIE_NAME, partitioned=False)


def hostname(host: str) -> str:
    """The host part of a ``Host`` header or a netloc (no port, no brackets), lower-case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    name = hostname(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def cookie_mode(scope, *, on_space: bool | None = None) -> CookieMode:
    """The cookie this request reads and, if it has none, is given."""
    on_space = bool(os.environ.get("SPACE_ID")) if on_space is None else on_space
    headers = Headers(scope=scope)
    forwarded_proto = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    https = on_space or scope.get("scheme") == "https" or forwarded_proto == "https"
    browser_on_loopback = "sec-fetch-site" in headers and is_loopback(headers.get("host", ""))
    return PARTITIONED if https or browser_on_loopback else FIRST_PARTY
