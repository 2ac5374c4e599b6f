"""A person in a real browser whose worker is killed mid-answer (``app_ng.py --workers 2`` behind HAProxy):
the page says why the answer is missing, the next message is answered with the conversation intact, and
the cut turn is marked as interrupted after a reload."""

from __future__ import annotations

from deployment_support import START_TIMEOUT, require_haproxy, running_deployment, worker_of
from tests_support import wait_until

try:
    from playwright.sync_api import expect
except ImportError:  # the ``browser`` fixture reports it: a skip locally, a failure in CI
    expect = None

BOT_MSG = '#chatbot [data-testid="bot"]'  # as in tests/e2e/conftest.py
LOAD_NOTICE = "#cookie-notice"  # the page-load notice line (ui/layout.py)
AFTER_FAILOVER_MS = 45_000  # the supervisor restarts the worker; its leases were expired when it exited


def test_a_worker_killed_mid_answer_is_explained_and_the_person_continues(open_chat, tmp_path):
    require_haproxy()
    with running_deployment(tmp_path, CMW_OFFLINE_TOKEN_DELAY="0.01") as deployment:
        chat = open_chat(None, deployment.url)
        assert chat.ask("My name is Ada").startswith("Nice to meet you, Ada")
        assert "apples" in chat.ask("Add 2 apples to my cart").lower()
        cookies = {c["name"]: c["value"] for c in chat.context.cookies()}
        serving = worker_of(deployment.url, cookies)

        chat.send("Count to 1000")
        expect(chat.page.locator(BOT_MSG).last).to_contain_text(" 30 ")
        victim = deployment.workers()[serving]
        victim.kill()  # SIGKILL, mid-answer

        # Gradio reloads the page (a new server answers); the page says why the answer is missing.
        expect(chat.page.locator(LOAD_NOTICE)).to_contain_text("cut off", timeout=AFTER_FAILOVER_MS)
        # The supervisor restarts the worker and HAProxy moves this person back to it: once that settled
        # (an event in flight across the move could be split between the two), the person goes on.
        wait_until(lambda: serving in deployment.workers() and deployment.workers()[serving].pid != victim.pid,
                   "the supervisor did not restart the worker", timeout=30)
        wait_until(lambda: worker_of(deployment.url, cookies) == serving, "the restarted worker was not used",
                   timeout=START_TIMEOUT)
        chat.send("What's my name?")
        expect(chat.page.locator(BOT_MSG).last).to_have_text("Your name is Ada.", timeout=AFTER_FAILOVER_MS)
        chat.wait_idle()
        chat.send("What's in my cart?")
        expect(chat.page.locator(BOT_MSG).last).to_contain_text("apples", ignore_case=True, timeout=AFTER_FAILOVER_MS)
        chat.wait_idle()

        chat.page.reload()
        chat.open()
        expect(chat.page.locator(BOT_MSG).filter(has_text="interrupted")).to_have_count(1)
        chat.assert_no_error()
