"""A person attaches a file in a real browser and asks about it; another person sees none of it."""

from __future__ import annotations

try:
    from playwright.sync_api import expect
except ImportError:  # the ``browser`` fixture reports it: a skip locally, a failure in CI
    expect = None

USER_MSG = '#chatbot [data-testid="user"]'  # as in tests/e2e/conftest.py
ATTACH_INPUT = '#composer input[type="file"]'  # the paperclip's hidden file input (beside #attach)
ORDERS = "order,item,amount\n1,apples,10\n2,pears,32\n3,canary-browser-2718,5\n"


def test_attach_a_file_then_ask_about_it_and_find_it_after_reload(launch_app, open_chat, tmp_path):
    app, url = launch_app()
    chat = open_chat(app, url)
    served = []
    chat.page.on("request", lambda request: served.append(request.url) if "file=" in request.url else None)
    orders = tmp_path / "orders.csv"
    orders.write_text(ORDERS)

    chat.page.set_input_files(ATTACH_INPUT, str(orders))
    bubble = chat.page.locator(USER_MSG).filter(has_text="orders.csv")
    expect(bubble).to_have_count(1)
    expect(bubble).to_contain_text("3 rows × 3 columns")
    chat.wait_idle()

    assert "47" in chat.ask("Sum amount in orders.csv")
    assert "canary-browser-2718" in chat.ask("Search my files for canary-browser-2718")
    expect(chat.tool_bubbles).to_have_count(2)

    chat.page.reload()
    chat.open()
    expect(chat.page.locator(USER_MSG).filter(has_text="3 rows × 3 columns")).to_have_count(1)
    assert not [u for u in served if "orders.csv" in u], served  # never served back by URL

    stranger = open_chat(app, url)  # another person (a browser context of their own)
    assert stranger.ask("What files do I have?").startswith("You have no files")
    assert "canary" not in stranger.ask("Search my files for canary-browser-2718")
    chat.assert_no_error()
