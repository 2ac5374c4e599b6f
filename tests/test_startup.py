"""Starting the app: a broken data directory or store stops it with one sentence (path and fix), never a
traceback or a server that fails on every click; the log carries no wrong hint and no per-request noise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests_support import ROOT, free_port

START_TIMEOUT = 90  # seconds: import + build on a loaded 2-core machine


def run_app(env_changes: dict[str, str], timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **env_changes}
    return subprocess.run([sys.executable, "app_ng.py", "--port", str(free_port())], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@contextmanager
def read_only_folder(tmp_path: Path):
    """A folder nobody may write to: a read-only bind mount as root (root ignores permissions), else
    mode 0500. Skips where neither is possible."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield folder
        finally:
            folder.chmod(0o700)
        return
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root without permission to make a read-only mount")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def assert_one_sentence(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("secret_key", [None, "a-secret-from-the-environment"])
def test_read_only_data_dir_stops_the_app_with_the_path_and_the_fix(tmp_path, secret_key):
    # With CMW_SECRET_KEY set the key file is not needed, so the app used to start and then fail every
    # action with a bare "Error"; without it, it died with an OSError traceback.
    with read_only_folder(tmp_path) as folder:
        env = {"CMW_DATA_DIR": str(folder / "data")}
        if secret_key:
            env["CMW_SECRET_KEY"] = secret_key
        result = run_app(env)
    assert_one_sentence(result, str(folder / "data"), "not writable", "CMW_DATA_DIR")


def test_a_data_dir_that_cannot_exist_is_named_with_the_fix(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert_one_sentence(run_app({"CMW_DATA_DIR": str(blocker / "data"), "CMW_SECRET_KEY": "k"}),
                        str(blocker / "data"), "CMW_DATA_DIR")


def test_a_broken_database_file_is_named_with_the_fix(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cmw.sqlite").write_bytes(b"this is not an SQLite database, just some bytes" * 100)
    assert_one_sentence(run_app({"CMW_DATA_DIR": str(data)}), str(data / "cmw.sqlite"), "CMW_DATA_DIR")


def test_an_unreachable_postgres_is_named_with_the_fix(tmp_path):
    result = run_app({"CMW_DATA_DIR": str(tmp_path / "data"),
                      "DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/none"})
    assert_one_sentence(result, "DATABASE_URL", "unset DATABASE_URL")


def test_the_log_has_no_share_hint_and_no_request_lines(tmp_path):
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "CMW_DATA_DIR": str(tmp_path / "data")}
    process = subprocess.Popen([sys.executable, "app_ng.py", "--port", str(port)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "the app did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        time.sleep(1)  # let the startup log lines out
    finally:
        process.terminate()
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert f"serving on http://127.0.0.1:{port}/" in output, output
    assert "share=True" not in output, output
    assert "HTTP Request:" not in output and "INFO httpx" not in output, output


def test_settings_are_read_from_a_dotenv_file_in_the_current_directory(tmp_path):
    (tmp_path / ".env").write_text("# copied from .env.example\nCMW_MAX_MESSAGE_CHARS=lots\n")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "CMW_DATA_DIR": str(tmp_path / "data")}
    env.pop("CMW_MAX_MESSAGE_CHARS", None)
    result = subprocess.run([sys.executable, str(ROOT / "app_ng.py"), "--port", str(free_port())], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=START_TIMEOUT)
    assert_one_sentence(result, "CMW_MAX_MESSAGE_CHARS='lots' is not a number")
