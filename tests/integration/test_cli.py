"""The command line a newcomer tries first: mint a token, chat from the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from app.cli.client import text_of
from app.core.constants import WEB
from app.services.auth import parse_token
from tests.integration.helpers import login
from tests.stack import ROOT


def run_app(stack: Any, *args: str, stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env={**os.environ, **stack.env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_token_command_prints_a_valid_token(stack: Any) -> None:
    done = run_app(stack, "token", "alice", "5")
    assert done.returncode == 0, done.stderr
    claims = parse_token(done.stdout.strip())
    assert (claims.user_id, claims.platform_id) == ("alice", 5)


def test_chat_one_shot_send_reaches_the_peer(stack: Any, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    b = login(stack, bob, WEB)
    try:
        done = run_app(stack, "chat", alice, bob, "--url", stack.ws_url, "--send", "hello from the terminal")
        assert done.returncode == 0, done.stderr
        assert "sent" in done.stdout
        pushed = b.pushed_msgs(1, timeout=30)
        assert [text_of(m) for m in pushed] == ["hello from the terminal"]
    finally:
        b.close()


def test_interactive_chat_sends_lines_and_prints_pushes(stack: Any, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    b = login(stack, bob, WEB)
    chat = subprocess.Popen(
        [sys.executable, "-m", "app", "chat", alice, bob, "--url", stack.ws_url],
        cwd=ROOT,
        env={**os.environ, **stack.env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert chat.stdout is not None and chat.stdin is not None
        banner = chat.stdout.readline()
        assert "connected as" in banner, banner
        chat.stdin.write("first line\nsecond line\n")
        chat.stdin.flush()
        pushed = b.pushed_msgs(2, timeout=30)
        assert [text_of(m) for m in pushed] == ["first line", "second line"]
        b.send_text(alice, "reply from bob")
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline and "reply from bob" not in line:
            line = chat.stdout.readline()
        assert f"{bob}: reply from bob" in line
    finally:
        if chat.stdin:
            chat.stdin.close()
        try:
            chat.wait(timeout=10)
        except subprocess.TimeoutExpired:
            chat.kill()
        b.close()
    assert chat.returncode == 0
