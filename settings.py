"""Every setting the app reads, in one place, from environment variables (see .env.example)."""

from __future__ import annotations

import os
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
NO_KEY = "sk-no-key-required"  # sent to a local server (OPENAI_BASE_URL without a key); it ignores keys


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number; fix it in your environment or .env file.") from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    return int(_float(env, name, default))


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _origins(raw: str) -> frozenset[str]:
    origins = frozenset(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
            raise SystemExit(f"CMW_ALLOWED_ORIGINS: {origin!r} is not an origin; write it like "
                             "https://www.example.com (scheme and host, no path), comma-separated.")
    return origins


@dataclass(frozen=True)
class Settings:
    # model
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    model_name: str = "offline"  # "" with a base URL: the one model the server lists (see agent/server_probe.py)
    offline_token_delay: float = 0.02
    model_timeout: float = 60.0  # seconds until the model's first chunk (connecting and retries included)
    model_chunk_timeout: float = 30.0  # seconds of silence allowed between two chunks
    model_retries: int = 1  # retries of a failed request, only before anything was shown
    max_output_tokens: int = 1024  # per model call; longer answers are cut and marked
    context_tokens: int | None = None  # the model's window; None: what the server reports, else 8192
    probe_model_server: bool = True  # list /v1/models (and try tools) at start
    # sessions
    session_max: int = 10_000
    session_ttl: float = 3600.0
    # serving
    concurrency_limit: int = 200  # turns streaming at once
    max_threads: int = 2440
    queue_max: int = 1000  # turns waiting for a slot; beyond this the user is told the app is busy
    stream_interval: float = 0.08
    max_message_chars: int = 4000
    rate_limit_per_owner: int = 30
    rate_limit_per_ip: int = 300
    redis_url: str | None = field(default=None, repr=False)  # rate limits counted across workers; else per worker
    workers: int = 1  # app processes on this store (CMW_WORKERS, set by the supervisor); >1: leases (memory/leases.py)
    new_sessions_per_ip: int = 120  # new session_hash bindings per minute per client address
    new_sessions_per_owner: int = 60  # ... and per owner cookie
    monitoring: bool = False  # Gradio's /monitoring dashboard
    worker_id: str | None = None  # set by the supervisor (--workers): responses name it in X-Cmw-Worker
    # owner credential (partitioned where the browser allows it, see security/cookie_mode.py)
    cookie_same_site: str = "lax"  # only for the first-party fallback cookie (plain http, non-loopback)
    allowed_origins: frozenset[str] = frozenset()  # other sites whose pages may call this app's API
    secret_key: str | None = field(default=None, repr=False)
    # storage
    data_dir: Path = Path("data")
    database_url: str | None = field(default=None, repr=False)
    retention_days: float = 30.0
    retention_sweep_seconds: float = 3600.0
    redact_pii: bool = False
    # people's own files (see agent/file_reader.py, memory/file_store.py)
    max_upload_mb: float = 10.0  # per file
    max_storage_mb: float = 50.0  # all files of one owner
    max_files_per_conversation: int = 20
    # assistants over MCP (/mcp)
    mcp_enabled: bool = True
    mcp_sessions_per_address: int = 50  # MCP sessions a client address may open per hour
    mcp_calls_per_minute: int = 60  # tool calls per MCP session per minute
    mcp_max_sessions: int = 1000  # open MCP sessions in the whole process
    mcp_token_hours: float = 24.0  # lifetime of an assistant token made in the page

    @property
    def gradio_event_limit(self) -> int:
        """Chat events Gradio may start at once: running and waiting turns, plus as many again that are
        answered "busy" straight away (see security/admission.py) instead of waiting unseen in Gradio's queue."""
        return 2 * (self.concurrency_limit + self.queue_max)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_storage_bytes(self) -> int:
        return int(self.max_storage_mb * 1024 * 1024)

    @property
    def uses_offline_model(self) -> bool:
        return self.model_name == "offline"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        key = env.get("OPENAI_API_KEY", "").strip() or None
        base_url = env.get("OPENAI_BASE_URL", "").strip().rstrip("/") or None
        if base_url:  # a server of one's own: its model list names the model, and it needs no key
            model = env.get("CMW_MODEL", "").strip()
            key = key or (NO_KEY if model != "offline" else None)
        else:
            model = env.get("CMW_MODEL", "").strip() or (DEFAULT_OPENAI_MODEL if key else "offline")
        if model != "offline" and not key:
            raise SystemExit(f"CMW_MODEL={model!r} needs OPENAI_API_KEY (or OPENAI_BASE_URL for a server of "
                             "your own). Set one, or unset CMW_MODEL (or set CMW_MODEL=offline) to use the "
                             "built-in offline model.")
        context = _int(env, "CMW_CONTEXT_TOKENS", 0)
        concurrency = max(1, _int(env, "CMW_CONCURRENCY_LIMIT", cls.concurrency_limit))
        queue_max = max(0, _int(env, "CMW_QUEUE_MAX", cls.queue_max))
        same_site = env.get("CMW_COOKIE_SAMESITE", "lax").strip().lower() or "lax"
        if same_site not in {"lax", "strict", "none"}:
            raise SystemExit(f"CMW_COOKIE_SAMESITE={same_site!r}: use lax or strict. Framed use (Spaces, "
                             "websites) needs no setting: the app picks a partitioned cookie by itself.")
        if same_site == "none":  # accepted for old configurations: framing now works without it
            same_site = "lax"
        return cls(
            openai_api_key=key,
            openai_base_url=base_url,
            model_name=model,
            offline_token_delay=max(0.0, _float(env, "CMW_OFFLINE_TOKEN_DELAY", cls.offline_token_delay)),
            model_timeout=max(1.0, _float(env, "CMW_MODEL_TIMEOUT", cls.model_timeout)),
            model_chunk_timeout=max(1.0, _float(env, "CMW_MODEL_CHUNK_TIMEOUT", cls.model_chunk_timeout)),
            model_retries=max(0, _int(env, "CMW_MODEL_RETRIES", cls.model_retries)),
            max_output_tokens=max(16, _int(env, "CMW_MAX_OUTPUT_TOKENS", cls.max_output_tokens)),
            context_tokens=max(256, context) if context else None,
            probe_model_server=env.get("CMW_PROBE_MODEL_SERVER", "1").strip().lower() not in {"0", "false", "no", "off"},
            session_max=max(1, _int(env, "CMW_SESSION_MAX", cls.session_max)),
            session_ttl=max(1.0, _float(env, "CMW_SESSION_TTL", cls.session_ttl)),
            concurrency_limit=concurrency,
            max_threads=max(40, _int(env, "CMW_MAX_THREADS", 2 * (concurrency + queue_max) + 40)),
            queue_max=queue_max,
            stream_interval=max(0.0, _float(env, "CMW_STREAM_INTERVAL", cls.stream_interval)),
            max_message_chars=max(1, _int(env, "CMW_MAX_MESSAGE_CHARS", cls.max_message_chars)),
            rate_limit_per_owner=max(0, _int(env, "CMW_RATE_LIMIT_PER_MINUTE", cls.rate_limit_per_owner)),
            rate_limit_per_ip=max(0, _int(env, "CMW_IP_RATE_LIMIT_PER_MINUTE", cls.rate_limit_per_ip)),
            redis_url=env.get("CMW_REDIS_URL", "").strip() or None,
            workers=max(1, _int(env, "CMW_WORKERS", cls.workers)),
            new_sessions_per_ip=max(0, _int(env, "CMW_NEW_SESSIONS_PER_MINUTE", cls.new_sessions_per_ip)),
            new_sessions_per_owner=max(0, _int(env, "CMW_NEW_SESSIONS_PER_OWNER_PER_MINUTE",
                                               cls.new_sessions_per_owner)),
            monitoring=_flag(env, "CMW_MONITORING"),
            worker_id=env.get("CMW_WORKER_ID", "").strip() or None,
            cookie_same_site=same_site,
            allowed_origins=_origins(env.get("CMW_ALLOWED_ORIGINS", "")),
            secret_key=env.get("CMW_SECRET_KEY", "").strip() or None,
            data_dir=Path(env.get("CMW_DATA_DIR", "").strip() or "data"),
            database_url=env.get("DATABASE_URL", "").strip() or None,
            retention_days=max(0.0, _float(env, "CMW_RETENTION_DAYS", cls.retention_days)),
            retention_sweep_seconds=max(1.0, _float(env, "CMW_RETENTION_SWEEP_SECONDS", cls.retention_sweep_seconds)),
            redact_pii=_flag(env, "CMW_REDACT_PII"),
            max_upload_mb=max(0.01, _float(env, "CMW_MAX_UPLOAD_MB", cls.max_upload_mb)),
            max_storage_mb=max(0.01, _float(env, "CMW_MAX_STORAGE_MB", cls.max_storage_mb)),
            max_files_per_conversation=max(1, _int(env, "CMW_MAX_FILES_PER_CONVERSATION",
                                                   cls.max_files_per_conversation)),
            mcp_enabled=env.get("CMW_MCP", "1").strip().lower() not in {"0", "false", "no", "off"},
            mcp_sessions_per_address=max(0, _int(env, "CMW_MCP_SESSIONS_PER_HOUR", cls.mcp_sessions_per_address)),
            mcp_calls_per_minute=max(0, _int(env, "CMW_MCP_CALLS_PER_MINUTE", cls.mcp_calls_per_minute)),
            mcp_max_sessions=max(1, _int(env, "CMW_MCP_MAX_SESSIONS", cls.mcp_max_sessions)),
            mcp_token_hours=max(0.01, _float(env, "CMW_MCP_TOKEN_HOURS", cls.mcp_token_hours)),
        )

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)
