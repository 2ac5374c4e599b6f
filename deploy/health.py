"""``GET /healthz`` for the load balancer, and which worker answered (``X-Cmw-Worker``).

HAProxy asks every worker twice a second (deploy/haproxy.cfg). The answer must cost next to nothing
and touch neither the owner cookie nor the session registry, so this middleware sits outside the HTTP
guard (security/http_guard.py) and answers before it: no cookie is minted, no session is bound.

With ``CMW_WORKER_ID`` set (the supervisor sets it for each worker) every response, the health check's
included, names the worker that produced it: how tests and operators see where HAProxy sent someone.
"""

from __future__ import annotations

HEALTH_PATH = "/healthz"
HEALTHY = b'{"ok": true}'
WORKER_HEADER = b"x-cmw-worker"


def _header_value(worker_id: str | None) -> bytes | None:
    """The id as a header value, or None when unset or not a short printable ASCII name."""
    if not worker_id or len(worker_id) > 64 or not worker_id.isascii() or not worker_id.isprintable():
        return None
    return worker_id.encode("ascii")


class HealthCheck:
    def __init__(self, app, *, worker_id: str | None = None):
        self.app = app
        self.worker = _header_value(worker_id)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.worker is not None:
            send = self._tagged(send)
        if scope["path"] == HEALTH_PATH and scope["method"] in ("GET", "HEAD"):
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(HEALTHY)).encode()),
                       (b"cache-control", b"no-store")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": HEALTHY if scope["method"] == "GET" else b""})
            return
        return await self.app(scope, receive, send)

    def _tagged(self, send):
        async def tagged(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (WORKER_HEADER, self.worker)]}
            await send(message)

        return tagged
