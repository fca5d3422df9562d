"""`python -m app chat`: log in as a user, send lines to a peer, print pushes as they arrive."""

from __future__ import annotations

import queue
import sys
import threading

from app.cli.client import ClientError, ImClient, text_of
from app.config import settings
from app.core import protocol
from app.core.conversation import single_conversation_id
from app.services.auth import mint_token


def run_chat(user_id: str, peer_id: str, platform_id: int, url: str | None, one_shot: str | None) -> int:
    base = url or f"ws://{settings.gateway_host}:{settings.gateway_port}"
    client = ImClient(base, user_id, platform_id, mint_token(user_id, platform_id), sdk_type=protocol.SDK_JSON)
    conv = single_conversation_id(user_id, peer_id)
    try:
        if one_shot is not None:
            ack = client.send_text(peer_id, one_shot)
            print(f"sent {ack.get('clientMsgID')} (serverMsgID {ack.get('serverMsgID')})")
            return 0
        newest = client.newest_seqs().get(conv, 0)
        if newest:
            history = client.pull_range(conv, max(1, newest - 19), newest, 20)
            for msg in history.get("Msgs", []):
                print(f"[{msg.get('seq')}] {msg.get('sendID')}: {text_of(msg)}")
        print(f"connected as {user_id} on {base}; type a line to send it to {peer_id}, Ctrl-D to quit")
        threading.Thread(target=_print_pushes, args=(client,), daemon=True).start()
        for line in sys.stdin:
            text = line.rstrip("\n")
            if not text:
                continue
            try:
                client.send_text(peer_id, text)
            except ClientError as err:
                print(f"! not sent: {err}")
        return 0
    finally:
        client.close()


def _print_pushes(client: ImClient) -> None:
    while not client.closed.is_set():
        try:
            push = client.next_push(timeout=1)
        except queue.Empty:
            continue
        for pulled in (push.get("data") or {}).get("msgs", {}).values():
            for msg in pulled.get("Msgs", []):
                print(f"[{msg.get('seq')}] {msg.get('sendID')}: {text_of(msg)}", flush=True)
