"""ui/failures.py: each kind of failure becomes its sentence, wherever it sits in the exception chain."""

from __future__ import annotations

import asyncio
import sqlite3

import httpx
import openai
import pytest

from memory.leases import LeaseBusy
from ui.failures import (CONVERSATION_BUSY, MODEL_BUSY, MODEL_KEY_REFUSED, MODEL_TIMEOUT, MODEL_UNREACHABLE,
                         SOMETHING_FAILED, STORE_DOWN, failure_message)

REQUEST = httpx.Request("POST", "http://model.invalid/v1/chat/completions")


def status(code: int) -> httpx.Response:
    return httpx.Response(code, request=REQUEST)


@pytest.mark.parametrize("error, sentence", [
    (openai.AuthenticationError("bad key", response=status(401), body=None), MODEL_KEY_REFUSED),
    (openai.APITimeoutError(request=REQUEST), MODEL_TIMEOUT),
    (openai.APIConnectionError(request=REQUEST), MODEL_UNREACHABLE),
    (openai.RateLimitError("slow down", response=status(429), body=None), MODEL_BUSY),
    (httpx.ConnectError("refused", request=REQUEST), MODEL_UNREACHABLE),
    (asyncio.TimeoutError(), MODEL_TIMEOUT),
    (sqlite3.OperationalError("database is locked"), STORE_DOWN),
    (LeaseBusy("lease 'conversation:x' still held by another worker after 180 s"), CONVERSATION_BUSY),
    (PermissionError(13, "Permission denied"), STORE_DOWN),
    (ValueError("something else"), SOMETHING_FAILED),
])
def test_each_failure_has_its_sentence(error, sentence):
    assert failure_message(error) == sentence


def test_the_cause_is_found_behind_a_wrapper():
    try:
        try:
            raise openai.APIConnectionError(request=REQUEST)
        except openai.APIConnectionError as inner:
            raise RuntimeError("graph step failed") from inner
    except RuntimeError as outer:
        assert failure_message(outer) == MODEL_UNREACHABLE


def test_sentences_say_what_to_do_and_never_the_exception_text():
    for sentence in (STORE_DOWN, MODEL_UNREACHABLE, MODEL_KEY_REFUSED, MODEL_TIMEOUT, MODEL_BUSY, SOMETHING_FAILED):
        assert sentence.count(".") >= 2 and ("try again" in sentence.lower() or "retry" in sentence.lower())
    assert "secret-detail" not in failure_message(ValueError("secret-detail"))
