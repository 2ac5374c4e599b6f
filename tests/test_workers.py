"""``python app_ng.py --workers 2``: real processes behind Debian's HAProxy (deploy/supervisor.py).

One deployment is started for the module (a supervisor, two workers, HAProxy; about 20 s on 2 cores) and
driven over HTTP: 30 gradio_client sessions, cookie affinity, a SIGKILLed worker, then SIGTERM to the
supervisor, which must leave no child alive. The tests run in file order; the last one stops the
deployment. Every process is ended by PID in the fixture's teardown whatever happened, every wait is
bounded, and the supervisor (started with the parent-death signal) stops its children if pytest dies.

Without ``haproxy`` these tests skip with the reason; with ``CI=true`` they fail (CI installs it).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import httpx
import psutil
import pytest
from gradio_client import Client

from deploy import supervisor
from deploy.supervisor import bind_address, render_config, supervise
from settings import Settings
from deployment_support import (ROOT, START_TIMEOUT, Deployment, answers, gone, require_haproxy,
                                running_deployment, worker_of)
from tests_support import free_port, wait_until

TURN_TIMEOUT = 30.0
SESSIONS = 30


@pytest.fixture(scope="module")
def haproxy() -> str:
    return require_haproxy()


# --- the configuration ----------------------------------------------------------------------------

def test_the_config_fills_in_only_the_bind_and_server_lines():
    template = supervisor.CONFIG.read_text(encoding="utf-8")
    rendered = render_config(template, "0.0.0.0:8080", [("w1", "127.0.0.1:9001"), ("w2", "127.0.0.1:9002"),
                                                        ("w3", "127.0.0.1:9003")])
    lines = rendered.splitlines()
    assert [line.strip() for line in lines if line.strip().startswith(("bind ", "server "))] == [
        "bind 0.0.0.0:8080", "server w1 127.0.0.1:9001", "server w2 127.0.0.1:9002", "server w3 127.0.0.1:9003"]
    untouched = [line for line in template.splitlines() if not line.strip().startswith(("bind ", "server "))]
    assert [line for line in lines if not line.strip().startswith(("bind ", "server "))] == untouched
    for needed in ("balance hash var(txn.owner)", "hash-type consistent", "req.cook(__Host-cmw_owner)",
                   "req.cook(cmw_owner)", "option httpchk GET /healthz", "inter 500ms fall 2 rise 2", "timeout check 5s",
                   "timeout tunnel", "X-Forwarded-Proto http unless { ssl_fc }"):
        assert needed in rendered, needed
    assert bind_address("::", 80) == ":::80" and bind_address("[::1]", 80) == "::1:80"
    with pytest.raises(ValueError):
        render_config("frontend f\n    bind :80\n", "127.0.0.1:1", [("w1", "127.0.0.1:2")])


def test_haproxy_accepts_the_repo_config_and_a_rendered_one(haproxy, tmp_path):
    assert subprocess.run([haproxy, "-c", "-q", "-f", str(supervisor.CONFIG)], timeout=30).returncode == 0
    rendered = tmp_path / "haproxy.cfg"
    rendered.write_text(render_config(supervisor.CONFIG.read_text(encoding="utf-8"), ":::8080",
                                      [("w1", "127.0.0.1:9001")]))
    check = subprocess.run([haproxy, "-c", "-f", str(rendered)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def test_without_haproxy_the_supervisor_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(supervisor.shutil, "which", lambda name, path=None: None)
    with pytest.raises(SystemExit) as stopped:
        supervise(Settings.from_env(), host="127.0.0.1", port=free_port(), workers=2)
    assert "apt-get install haproxy" in str(stopped.value) and "without --workers" in str(stopped.value)
    assert not (tmp_path / "data").exists()  # nothing prepared, nothing started


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_child_dies_with_its_supervisor_even_when_that_is_killed():
    script = ("import os, subprocess, time; from deploy.supervisor import _die_with_parent; "
              "child = subprocess.Popen(['sleep', '60'], start_new_session=True, "
              "preexec_fn=_die_with_parent(os.getpid())); print(child.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = psutil.Process(int(parent.stdout.readline()))
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
        parent.kill()  # SIGKILL: the supervisor gets no chance to stop anything itself
        parent.wait(timeout=10)
        wait_until(lambda: gone(child), "the child outlived its killed parent", timeout=5)
    finally:
        parent.kill()
        parent.wait(timeout=10)
        parent.stdout.close()
        if child is not None and not gone(child):
            child.kill()


@pytest.fixture(scope="module")
def deployment(haproxy, tmp_path_factory) -> Iterator[Deployment]:
    with running_deployment(tmp_path_factory.mktemp("workers")) as running:
        yield running



def _chat(client: Client, text: str) -> str:
    return client.submit(text, api_name="/chat").result(timeout=TURN_TIMEOUT)


def test_thirty_sessions_through_haproxy_each_get_their_own_and_use_both_workers(deployment, clients):
    barrier = threading.Barrier(SESSIONS, timeout=60)
    lock = threading.Lock()

    def one(_: int) -> tuple[str, list[str], str]:
        client = Client(deployment.url, verbose=False)
        with lock:
            clients.append(client)
        name = f"Canary{uuid.uuid4().hex[:10]}"
        barrier.wait()
        replies = [_chat(client, f"My name is {name}"), _chat(client, "What's my name?")]
        return name, replies, worker_of(deployment.url, client.cookies)

    with ThreadPoolExecutor(SESSIONS) as pool:
        results = list(pool.map(one, range(SESSIONS)))
    names = {name for name, _, _ in results}
    assert len(names) == SESSIONS
    for name, replies, _ in results:
        assert replies[1] == f"Your name is {name}."
        assert not (names - {name}) & set(" ".join(replies).replace(".", " ").split()), "another name leaked"
    served_by = [worker for _, _, worker in results]
    assert set(served_by) == {"1", "2"}, f"all sessions on one worker: {served_by}"


def test_one_owner_cookie_always_reaches_the_same_worker(deployment):
    owners = []
    for _ in range(8):
        minted = httpx.get(deployment.url, timeout=10)  # a first visit: the cookie comes from some worker
        owners.append(dict(minted.cookies))
        assert "cmw_owner" in owners[-1]
    for cookies in owners:
        with httpx.Client(base_url=deployment.url, cookies=cookies, timeout=10) as http:
            answered_by = {http.get(path).headers["x-cmw-worker"]
                           for path in ("healthz", "", "config", "gradio_api/info") * 10}
            assert len(answered_by) == 1, f"one owner was answered by workers {answered_by}"
    assert len({worker_of(deployment.url) for _ in range(20)}) == 1  # no cookie: the client address decides


def test_a_killed_worker_is_restarted_on_its_port_and_serves_again(deployment, clients):
    cookies = next(c for c in (dict(httpx.get(deployment.url, timeout=10).cookies) for _ in range(40))
                   if worker_of(deployment.url, c) == "1")
    victim = deployment.workers()["1"]
    victim.kill()  # SIGKILL
    victim.wait(timeout=10)
    # Meanwhile HAProxy sends this owner to the other worker (down after two failed checks, ~1 s).
    wait_until(lambda: answers(deployment.url) and worker_of(deployment.url, cookies) == "2",
               "the owner was not sent to the surviving worker", timeout=10)
    wait_until(lambda: "1" in deployment.workers() and deployment.workers()["1"].pid != victim.pid,
               "the supervisor did not restart the worker", timeout=15)
    assert f"worker 1 (pid {victim.pid}) exited" in deployment.log.read_text(errors="replace")
    wait_until(lambda: worker_of(deployment.url, cookies) == "1", "the restarted worker was not used again",
               timeout=START_TIMEOUT)
    client = Client(deployment.url, verbose=False, httpx_kwargs={"cookies": dict(cookies)})
    clients.append(client)
    name = f"Canary{uuid.uuid4().hex[:10]}"
    _chat(client, f"My name is {name}")
    assert _chat(client, "What's my name?") == f"Your name is {name}."
    assert worker_of(deployment.url, client.cookies) == "1"


def _owner_on(url: str, worker: str) -> dict[str, str]:
    """A fresh owner cookie that HAProxy sends to ``worker``."""
    return next(c for c in (dict(httpx.get(url, timeout=10).cookies) for _ in range(60)) if worker_of(url, c) == worker)


def test_sigkill_mid_stream_loses_no_turn_and_the_person_continues_on_the_other_worker(deployment, clients):
    url = deployment.url
    person = Client(url, verbose=False, httpx_kwargs={"cookies": _owner_on(url, "1")})
    bystander = Client(url, verbose=False, httpx_kwargs={"cookies": _owner_on(url, "2")})
    clients.extend([person, bystander])
    name, other = f"Canary{uuid.uuid4().hex[:10]}", f"Canary{uuid.uuid4().hex[:10]}"
    _chat(person, f"My name is {name}")
    _chat(person, "Add 2 apples to my cart")
    _chat(bystander, f"My name is {other}")

    streaming = person.submit("Count to 1000", api_name="/chat")
    elsewhere = bystander.submit("Count to 600", api_name="/chat")
    wait_until(lambda: any(streaming.outputs()), "the stream never started", timeout=TURN_TIMEOUT)
    assert not streaming.done()
    victim = deployment.workers()["1"]
    victim.kill()  # SIGKILL, mid-answer
    killed_at = time.monotonic()
    # The supervisor saw it exit and expired its lease on the person's conversation: no wait for the TTL.
    wait_until(lambda: "1 running conversation(s) released" in deployment.tail(),
               f"the supervisor did not release the stopped worker's conversation:\n{deployment.tail()[-600:]}", timeout=15)

    assert elsewhere.result(timeout=TURN_TIMEOUT).split()[-1] == "600"  # the other worker's person noticed nothing
    answer = None
    while answer is None:  # the same client (page) sends its next message until another worker answers it
        assert time.monotonic() - killed_at < 30, "no answer within 30 s of the SIGKILL"
        try:
            answer = _chat(person, "What's my name?")
        except Exception:
            time.sleep(0.5)
    assert answer == f"Your name is {name}."  # by the surviving worker, or by worker 1 restarted meanwhile
    # Worker 1 comes back and its people move back to it (consistent hashing): wait for that, so that no
    # later request is split across the move (its queue/join on one worker, its queue/data on the other).
    wait_until(lambda: "1" in deployment.workers() and deployment.workers()["1"].pid != victim.pid,
               "the supervisor did not restart the worker", timeout=15)
    wait_until(lambda: worker_of(url, person.cookies) == "1", "the restarted worker was not used again",
               timeout=START_TIMEOUT)
    assert "apples" in _chat(person, "What's in my cart?").lower()
    conversation = person.predict(api_name="/conversations")[0]["id"]
    records = person.predict(conversation, api_name="/resume")
    users = [r["content"] for r in records if r["role"] == "user"]
    assert users[:3] == [f"My name is {name}", "Add 2 apples to my cart", "Count to 1000"]  # nothing lost
    after = records[[r["content"] for r in records].index("Count to 1000") + 1]
    assert after == {"role": "user", "content": "What's my name?"}  # no half-written answer was stored
    assert other not in " ".join(r["content"] for r in records)


def _port_of(worker: psutil.Process) -> int:
    command = worker.cmdline()
    return int(command[command.index("--port") + 1])


def test_two_workers_racing_turns_on_one_conversation_never_interleave(deployment, clients):
    """A forced re-route: one owner's two clients talk straight to worker 1 and worker 2 (past HAProxy)
    and race turns on the same conversation; the store's lease lets one turn at a time write it."""
    workers = deployment.workers()
    first = Client(f"http://127.0.0.1:{_port_of(workers['1'])}/", verbose=False)
    clients.append(first)
    first.predict("My name is Racer", api_name="/chat")
    conversation = first.predict(api_name="/conversations")[0]["id"]
    second = Client(f"http://127.0.0.1:{_port_of(workers['2'])}/", verbose=False,
                    httpx_kwargs={"cookies": dict(first.cookies)})
    clients.append(second)
    second.predict(conversation, api_name="/resume")
    rounds = 6

    def race(client: Client, tag: str) -> list[str]:
        return [_chat(client, f"Count to {40 + i}") + f" [{tag}]" for i in range(rounds)]

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(race, (first, second), ("w1", "w2")))
    assert all(a.split(" [")[0].split()[-1] == str(40 + i) for run in answers for i, a in enumerate(run))
    records = first.predict(conversation, api_name="/resume")
    turns = records[2:]  # after "My name is Racer" and its answer
    assert len(turns) == 2 * 2 * rounds, turns
    for ask, answer in zip(turns[::2], turns[1::2]):  # each question followed by its own whole answer
        assert ask["role"] == "user" and answer["role"] == "assistant"
        assert answer["content"].split()[-1] == ask["content"].split()[-1], (ask, answer)


def test_sigterm_to_the_supervisor_leaves_no_child_alive(deployment):
    deployment.workers()  # remember the current children too
    children = list(deployment.seen.values())
    assert sum(1 for c in children if c.is_running()) == 3  # two workers and HAProxy
    assert any("haproxy" in c.name() for c in children if c.is_running())
    deployment.process.send_signal(signal.SIGTERM)
    assert deployment.process.wait(timeout=20) == 0, deployment.tail()
    wait_until(lambda: all(gone(c) for c in children), "a child outlived the supervisor", timeout=5)
    assert not answers(deployment.url)
