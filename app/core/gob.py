"""Go encoding/gob codec for OpenIM's websocket envelopes (skeleton; implementation in progress)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_GOB_FRAME_BYTES = 1 << 20


class GobError(ValueError):
    """A malformed gob frame: the caller answers 3001 (or 1001)."""


@dataclass(frozen=True)
class GeneralWsReq:
    req_identifier: int = 0
    token: str = ""
    send_id: str = ""
    operation_id: str = ""
    msg_incr: str = ""
    data: bytes = b""


@dataclass(frozen=True)
class GeneralWsResp:
    req_identifier: int = 0
    err_code: int = 0
    err_msg: str = ""
    msg_incr: str = ""
    operation_id: str = ""
    data: bytes = b""


def decode_request(frame: bytes) -> GeneralWsReq:
    raise GobError("not implemented yet")


def encode_response(resp: GeneralWsResp) -> bytes:
    raise NotImplementedError


def encode_request(req: GeneralWsReq) -> bytes:
    raise NotImplementedError


def decode_response(frame: bytes) -> GeneralWsResp:
    raise GobError("not implemented yet")
