"""Source-tree rules that keep isolation true by construction (see SESSION_ISOLATION.md)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from gradio_compat import queue_max_size

ROOT = Path(__file__).resolve().parent.parent
APP_FILES = sorted(p for p in ROOT.rglob("*.py")
                   if not {"tests", "bench", ".venv", "data"} & set(p.relative_to(ROOT).parts))
MUTABLE_CALLS = {"dict", "list", "set", "defaultdict", "OrderedDict", "Counter", "deque", "TTLCache",
                 "LRUCache", "LFUCache", "WeakValueDictionary", "WeakKeyDictionary"}


def _trees():
    return [(p.relative_to(ROOT).as_posix(), ast.parse(p.read_text(encoding="utf-8"))) for p in APP_FILES]


def test_app_sources_are_found():
    names = {p for p, _ in _trees()}
    assert {"app_ng.py", "memory/registry.py", "ui/chat_handler.py", "agent/cmw_agent.py"} <= names


def test_no_default_session_literal_anywhere():
    hits = [f"{path}:{node.lineno}" for path, tree in _trees() for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lower() == "default"]
    assert hits == [], f'"default" used as a value (a shared session/thread id in disguise?): {hits}'


def test_no_module_level_mutable_state():
    hits = []
    for path, tree in _trees():
        for node in tree.body:
            if not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
                continue
            value = node.value
            if isinstance(value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)):
                hits.append(f"{path}:{node.lineno}")
            elif isinstance(value, ast.Call):
                func = value.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if name in MUTABLE_CALLS:
                    hits.append(f"{path}:{node.lineno}")
    assert hits == [], f"module-level mutable containers (per-user state must live on Session): {hits}"


def test_no_global_chat_objects_or_thread_locals():
    hits = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                hits.append(f"{path}:{node.lineno} global statement")
            if isinstance(node, ast.Attribute) and node.attr in {"local", "ContextVar", "ChatInterface"}:
                hits.append(f"{path}:{node.lineno} {node.attr}")
            if isinstance(node, ast.Name) and node.id.startswith("_global_"):
                hits.append(f"{path}:{node.lineno} {node.id}")
    assert hits == [], hits


def test_the_registry_is_the_only_ttl_cache():
    users = [path for path, tree in _trees() for node in ast.walk(tree)
             if isinstance(node, ast.Name) and node.id == "TTLCache"]
    # the rate limiter's timestamp buckets are the one documented exception (no user data in them)
    assert set(users) == {"memory/registry.py", "security/rate_limit.py"}


def test_no_tool_takes_a_session_or_user_id():
    from agent.catalog import load_catalog
    from agent.tools import build_tools

    for tool in build_tools(load_catalog()):
        fields = set(tool.tool_call_schema.model_json_schema().get("properties", {}))
        assert not {f for f in fields if any(w in f for w in ("session", "user", "owner", "thread", "conversation"))}, \
            (tool.name, fields)


def test_every_gradio_handler_takes_the_request():
    from ui.chat_handler import ChatHandlers
    from ui.conversations import ConversationHandlers
    from ui.privacy import PrivacyHandlers

    checked = set()
    for handlers in (ChatHandlers, ConversationHandlers, PrivacyHandlers):
        for name, method in inspect.getmembers(handlers, inspect.isfunction):
            if name.startswith("_") or isinstance(inspect.getattr_static(handlers, name), staticmethod):
                continue  # a static method has no instance, hence no session to reach
            assert "request" in inspect.signature(method).parameters, f"{handlers.__name__}.{name} ignores gr.Request"
            checked.add(name)
    assert {"api_chat", "respond", "stop", "undo", "retry", "clear", "load", "export", "delete_all"} <= checked


@pytest.mark.parametrize("setting", ["concurrency_limit", "max_threads"])
def test_chat_is_not_limited_to_one_user_at_a_time(make_settings, setting):
    from app_ng import build_app

    app = build_app(make_settings())
    assert getattr(app.settings, setting) > 1
    chat = [fn for fn in app.demo.fns.values() if fn.api_name == "chat"]
    assert chat and chat[0].concurrency_limit == app.settings.gradio_event_limit > app.settings.concurrency_limit > 1
    assert queue_max_size(app.demo) == app.settings.gradio_event_limit
    assert app.settings.max_threads >= app.settings.concurrency_limit
