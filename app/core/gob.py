"""Go's encoding/gob wire format, as much of it as OpenIM's websocket envelopes need.

openim-sdk-core (every official OpenIM app) and open-im-server's gateway exchange one gob stream per
websocket frame: each frame is written by a fresh ``gob.Encoder`` (``encoding/gob`` in Go), so it carries
the type definition of its struct before the value. This module reads and writes those frames, written
from the format's documentation (https://pkg.go.dev/encoding/gob) and checked byte for byte against
frames from Go itself (tests/interop/gob/golden.json).

The format, briefly:

* unsigned integer: below 128 one byte; otherwise a byte holding the negated byte count, then the
  value's big-endian bytes (at most 8).
* signed integer: zig-zag in an unsigned one: ``u = i << 1`` for ``i >= 0``, ``u = (~i << 1) | 1`` else.
* bool, float, complex are unsigned integers too; string and ``[]byte``: a length, then the bytes.
* struct: for each non-zero field, the delta from the previous field number (starting at -1) and its
  value; 0 ends the struct. Zero fields are omitted, so an all-zero struct is a single 0.
* slice and array: a count, then the elements; map: a count, then key, value pairs.
* a stream is messages: ``length (uint) | type id (int) | payload``. A negative type id ``-id``
  carries the definition of type ``id`` (a ``wireType`` struct); a positive one carries a value.
  Builtin ids: bool 1, int 2, uint 3, float 4, []byte 5, string 6, complex 7, interface 8, wireType 16,
  arrayType 17, CommonType 18, sliceType 19, structType 20, fieldType 21, []fieldType 22,
  mapType 23. User-defined types get ids from 64 up: Go before 1.21 gave out 65 first, Go 1.21 and
  newer give 64 first (the wasm build of openim-sdk-core 3.8.3 defines its GeneralWsReq as 64), and
  ids are given out per Go process in the order it first meets the types, so a sender may use any id
  from 64: we read whatever the frame defines, as Go's decoder does.

The receiver matches struct fields BY NAME, so a sender's field order does not matter and fields we
do not know are skipped (whatever kind they are). The struct's own name, sent in the definition, is
informational: Go does not check it and neither do we.

What we write is what Go writes: a request exactly as openim-sdk-core encodes its ``GeneralWsReq``, an
answer or push exactly as open-im-server v3.8 encodes its ``msggateway.Resp`` (named ``Resp`` on the
wire, fields ReqIdentifier, MsgIncr, OperationID, ErrCode, ErrMsg, Data; the SDK reads it into its
``GeneralWsResp``, by name), always with type id 65.

Hostile input: every length and count is checked against the bytes left in its message before
anything is allocated or skipped, a frame is at most ``MAX_GOB_FRAME_BYTES``, nested values are
skipped with an explicit stack bounded by ``MAX_NESTING``, and every defect raises ``GobError``
(never another exception). Departures from Go's decoder, all on input no Go encoder writes: the value
message must end where its value ends; strings must be UTF-8. Like Go's ``Decoder.Decode``, we stop
after the first value: bytes after its message are ignored.

An interface value is the one place where a value spans messages: Go writes the definitions of its
concrete type (and of the types that one uses) where it meets them, each ending the message being
written, so the enclosing value goes on in the message after them. We skip such values as Go's
decoder reads them (tests/interop/gob/golden.json has one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_GOB_FRAME_BYTES: Final = 1 << 20
"""The largest frame we decode or encode; every length read from the wire is bounded by it."""

MAX_NESTING: Final = 100
"""How deeply values we skip may nest (Go's own bound for ignored values is 10000)."""

# Builtin type ids (encoding/gob type.go).
_BOOL: Final = 1
_INT: Final = 2
_UINT: Final = 3
_FLOAT: Final = 4
_BYTES: Final = 5
_STRING: Final = 6
_COMPLEX: Final = 7
_INTERFACE: Final = 8
_FIRST_USER_ID: Final = 64  # Go's decoder refuses to (re)define ids below this (`recvType`).
_OUR_TYPE_ID: Final = 65

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_INT32_MIN: Final = -(1 << 31)
_INT32_MAX: Final = (1 << 31) - 1


class GobError(ValueError):
    """A malformed gob frame: the caller answers 3001 (or 1001)."""


@dataclass(frozen=True)
class GeneralWsReq:
    """openim-sdk-core's request envelope (``GeneralWsReq``; the gateway reads it as ``Req``)."""

    req_identifier: int = 0
    token: str = ""
    send_id: str = ""
    operation_id: str = ""
    msg_incr: str = ""
    data: bytes = b""


@dataclass(frozen=True)
class GeneralWsResp:
    """The gateway's answer and push envelope (``Resp`` in open-im-server, ``GeneralWsResp`` in the SDK)."""

    req_identifier: int = 0
    err_code: int = 0
    err_msg: str = ""
    msg_incr: str = ""
    operation_id: str = ""
    data: bytes = b""


# ---------------------------------------------------------------------------------------------------
# Primitive encoding


def _put_uint(out: bytearray, value: int) -> None:
    if value < 0 or value >> 64:
        raise GobError(f"unsigned integer out of range: {value}")
    if value < 0x80:
        out.append(value)
        return
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    out.append(256 - len(raw))
    out += raw


def _put_int(out: bytearray, value: int) -> None:
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise GobError(f"integer out of range: {value}")
    _put_uint(out, (~value << 1) | 1 if value < 0 else value << 1)


def _put_bytes(out: bytearray, value: bytes) -> None:
    _put_uint(out, len(value))
    out += value


def _put_string(out: bytearray, value: str) -> None:
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise GobError(f"string is not encodable as UTF-8: {exc}") from None
    _put_bytes(out, raw)


def _put_message(out: bytearray, type_id: int, payload: bytes) -> None:
    body = bytearray()
    _put_int(body, type_id)
    body += payload
    _put_uint(out, len(body))
    out += body


# ---------------------------------------------------------------------------------------------------
# Primitive decoding


class _Reader:
    """A cursor over a frame's messages, reading within the current one (``pos`` up to ``end``).

    Every read is bounds-checked and raises GobError. Reads never run past the current message: only
    ``next_message`` moves on to the next one (Go's decoder does so at the start of the frame, after a
    type definition, and inside an interface value, whose concrete type's definitions Go writes as
    messages that split the enclosing value's message).
    """

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0
        self.end = 0

    def next_message(self) -> None:
        if self.pos != self.end:
            raise GobError("extra bytes in a message")
        self.end = len(self.buf)
        size = self.uint()
        if size == 0 or size > self.end - self.pos:
            raise GobError(f"message of {size} bytes, {self.end - self.pos} left in the frame")
        self.end = self.pos + size

    def remaining(self) -> int:
        return self.end - self.pos

    def uint(self) -> int:
        if self.pos >= self.end:
            raise GobError("truncated: unsigned integer expected")
        first = self.buf[self.pos]
        self.pos += 1
        if first < 0x80:
            return first
        count = 256 - first
        if count > 8:
            raise GobError(f"unsigned integer of {count} bytes")
        if count > self.end - self.pos:
            raise GobError("truncated unsigned integer")
        value = int.from_bytes(self.buf[self.pos : self.pos + count], "big")
        self.pos += count
        return value

    def sint(self) -> int:
        u = self.uint()
        return ~(u >> 1) if u & 1 else u >> 1

    def length(self) -> int:
        """A byte length or element count: never more than the bytes left in the message."""
        n = self.uint()
        if n > self.end - self.pos:
            raise GobError(f"length {n} exceeds the {self.end - self.pos} bytes left")
        return n

    def raw(self, n: int) -> bytes:
        if n > self.end - self.pos:
            raise GobError("truncated bytes")
        value = self.buf[self.pos : self.pos + n]
        self.pos += n
        return value

    def bytes_(self) -> bytes:
        return self.raw(self.length())

    def string(self) -> str:
        raw = self.bytes_()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GobError("string is not UTF-8") from None


# ---------------------------------------------------------------------------------------------------
# Type definitions (wireType), as far as a receiver needs them: to match fields by name and to skip
# what it does not know.


@dataclass(frozen=True)
class _Struct:
    name: str
    fields: tuple[tuple[str, int], ...]  # (field name, type id), in the sender's field order


@dataclass(frozen=True)
class _Slice:
    elem: int


@dataclass(frozen=True)
class _Array:
    elem: int
    length: int


@dataclass(frozen=True)
class _Map:
    key: int
    elem: int


@dataclass(frozen=True)
class _Opaque:
    """GobEncoder, BinaryMarshaler, TextMarshaler: a byte count and the bytes."""


_WireType = _Struct | _Slice | _Array | _Map | _Opaque


def _next_field(r: _Reader, current: int, nfields: int) -> int:
    """The next field number of a struct being read (-1 when the struct ends)."""
    delta = r.uint()
    if delta == 0:
        return -1
    field = current + delta
    if field >= nfields:
        raise GobError(f"field number {field} out of range ({nfields} fields)")
    return field


def _read_common(r: _Reader) -> str:
    """CommonType{Name string; Id typeId}: the name (the id is the message's, Go ignores this one)."""
    name = ""
    field = _next_field(r, -1, 2)
    while field >= 0:
        if field == 0:
            name = r.string()
        else:
            r.sint()
        field = _next_field(r, field, 2)
    return name


def _read_field_type(r: _Reader) -> tuple[str, int]:
    """fieldType{Name string; Id typeId}."""
    name, type_id = "", 0
    field = _next_field(r, -1, 2)
    while field >= 0:
        if field == 0:
            name = r.string()
        else:
            type_id = r.sint()
        field = _next_field(r, field, 2)
    return name, type_id


def _read_struct_type(r: _Reader) -> _Struct:
    """structType{CommonType; Field []fieldType}."""
    name = ""
    fields: list[tuple[str, int]] = []
    field = _next_field(r, -1, 2)
    while field >= 0:
        if field == 0:
            name = _read_common(r)
        else:
            count = r.length()
            fields = [_read_field_type(r) for _ in range(count)]
        field = _next_field(r, field, 2)
    return _Struct(name, tuple(fields))


def _read_composite(r: _Reader, nfields: int) -> list[int]:
    """arrayType{CommonType; Elem; Len}, sliceType{CommonType; Elem}, mapType{CommonType; Key; Elem}:
    the integer fields after CommonType, 0 where omitted."""
    ints = [0] * (nfields - 1)
    field = _next_field(r, -1, nfields)
    while field >= 0:
        if field == 0:
            _read_common(r)
        else:
            ints[field - 1] = r.sint()
        field = _next_field(r, field, nfields)
    return ints


def _read_opaque(r: _Reader) -> _Opaque:
    """gobEncoderType{CommonType}."""
    field = _next_field(r, -1, 1)
    while field >= 0:
        _read_common(r)
        field = _next_field(r, field, 1)
    return _Opaque()


def _read_wire_type(r: _Reader) -> _WireType:
    """wireType{ArrayT; SliceT; StructT; MapT; GobEncoderT; BinaryMarshalerT; TextMarshalerT}: one set."""
    found: list[_WireType] = []
    field = _next_field(r, -1, 7)
    while field >= 0:
        if field == 0:
            elem, length = _read_composite(r, 3)
            found.append(_Array(elem, length))
        elif field == 1:
            (elem,) = _read_composite(r, 2)
            found.append(_Slice(elem))
        elif field == 2:
            found.append(_read_struct_type(r))
        elif field == 3:
            key, elem = _read_composite(r, 3)
            found.append(_Map(key, elem))
        else:
            found.append(_read_opaque(r))
        field = _next_field(r, field, 7)
    if len(found) != 1:
        raise GobError(f"type definition with {len(found)} kinds")
    return found[0]


# ---------------------------------------------------------------------------------------------------
# Skipping a value of any type we do not read (explicit stack: no recursion on the sender's nesting)


def _define_type(r: _Reader, type_id: int, types: dict[int, _WireType]) -> None:
    """Read the definition of type_id (a message whose type id was -type_id)."""
    if type_id < _FIRST_USER_ID or type_id in types:
        raise GobError(f"type id {type_id} cannot be (re)defined")
    types[type_id] = _read_wire_type(r)


def _skip_interface(r: _Reader, types: dict[int, _WireType]) -> None:
    """An interface value: the concrete type's name (empty: nil), then, as Go writes it, definitions
    of types new to the stream (each may end the current message), the concrete type's id, and the
    concrete value delimited by its byte count."""
    name_len = r.length()
    r.raw(name_len)
    if not name_len:
        return
    while True:
        if r.remaining() == 0:
            r.next_message()
        type_id = r.sint()
        if type_id >= 0:
            break
        _define_type(r, -type_id, types)
        if r.remaining():
            r.uint()  # the byte count of the next definition or of the value, written inline
    r.raw(r.length())


def _skip_value(r: _Reader, type_id: int, types: dict[int, _WireType]) -> None:
    # Pending work, last first: an int is one value of that type id to skip; (struct, n) continues a
    # struct after its field n; (type ids, n) skips n more groups of values (slice or array elements,
    # map key and value pairs). Every value takes at least one byte, so counts are bounded by the bytes
    # left, and the stack by the nesting of the values (MAX_NESTING).
    stack: list[int | tuple[_Struct, int] | tuple[tuple[int, ...], int]] = [type_id]
    while stack:
        if len(stack) > 3 * MAX_NESTING:
            raise GobError("values nested too deeply")
        item = stack.pop()
        if isinstance(item, tuple):
            what, n = item
            if isinstance(what, _Struct):
                field = _next_field(r, n, len(what.fields))
                if field >= 0:
                    stack.append((what, field))
                    stack.append(what.fields[field][1])
            elif n > 0:
                stack.append((what, n - 1))
                stack.extend(reversed(what))
            continue
        if item in (_BOOL, _INT, _UINT, _FLOAT):
            r.uint()
        elif item in (_BYTES, _STRING):
            r.raw(r.length())
        elif item == _COMPLEX:
            r.uint()
            r.uint()
        elif item == _INTERFACE:
            _skip_interface(r, types)
        else:
            wire = types.get(item)
            if wire is None:
                raise GobError(f"unknown type id {item}")
            if isinstance(wire, _Struct):
                stack.append((wire, -1))
            elif isinstance(wire, _Slice):
                stack.append(((wire.elem,), r.length()))
            elif isinstance(wire, _Map):
                stack.append(((wire.key, wire.elem), r.length()))
            elif isinstance(wire, _Array):
                count = r.length()
                if count != wire.length:
                    raise GobError(f"array of {count} elements, its type says {wire.length}")
                stack.append(((wire.elem,), count))
            else:
                r.raw(r.length())


# ---------------------------------------------------------------------------------------------------
# Frames


# Our structs as the receiver sees them: Go field name -> (our attribute, gob builtin type id).
_FieldMap = dict[str, tuple[str, int]]

_REQ_FIELDS: Final[tuple[tuple[str, str, int], ...]] = (
    # openim-sdk-core's GeneralWsReq, in its order (what encode_request writes).
    ("ReqIdentifier", "req_identifier", _INT),
    ("Token", "token", _STRING),
    ("SendID", "send_id", _STRING),
    ("OperationID", "operation_id", _STRING),
    ("MsgIncr", "msg_incr", _STRING),
    ("Data", "data", _BYTES),
)
_RESP_FIELDS: Final[tuple[tuple[str, str, int], ...]] = (
    # open-im-server v3.8 msggateway.Resp, in its order (what encode_response writes).
    ("ReqIdentifier", "req_identifier", _INT),
    ("MsgIncr", "msg_incr", _STRING),
    ("OperationID", "operation_id", _STRING),
    ("ErrCode", "err_code", _INT),
    ("ErrMsg", "err_msg", _STRING),
    ("Data", "data", _BYTES),
)


@dataclass
class _Values:
    ints: dict[str, int]
    strings: dict[str, str]
    blobs: dict[str, bytes]


def _decode_struct_frame(frame: bytes, ours: tuple[tuple[str, str, int], ...]) -> _Values:
    """Read type definitions, then one struct value; return our attributes found in it."""
    if not isinstance(frame, bytes | bytearray | memoryview):
        raise GobError("a gob frame is bytes")
    buf = bytes(frame)
    if len(buf) > MAX_GOB_FRAME_BYTES:
        raise GobError(f"frame of {len(buf)} bytes exceeds {MAX_GOB_FRAME_BYTES}")
    fields: _FieldMap = {go: (attr, tid) for go, attr, tid in ours}
    types: dict[int, _WireType] = {}
    r = _Reader(buf)
    while True:
        if r.end == len(buf):
            raise GobError("truncated: no value in the frame" if buf else "empty frame")
        r.next_message()
        type_id = r.sint()
        if type_id < 0:
            _define_type(r, -type_id, types)
            continue
        wire = types.get(type_id)
        if not isinstance(wire, _Struct):
            raise GobError(f"value of type id {type_id} is not a struct this frame defines")
        names = {name for name, _ in wire.fields}
        if wire.fields and not names & fields.keys():
            raise GobError(f"type mismatch: no field of {wire.name!r} matches ours")
        values = _Values({}, {}, {})
        field = _next_field(r, -1, len(wire.fields))
        while field >= 0:
            name, sent_type = wire.fields[field]
            known = fields.get(name)
            if known is None:
                _skip_value(r, sent_type, types)
            else:
                attr, our_type = known
                if sent_type != our_type:
                    raise GobError(f"field {name} has type id {sent_type}, we need {our_type}")
                if our_type == _INT:
                    values.ints[attr] = r.sint()
                elif our_type == _STRING:
                    values.strings[attr] = r.string()
                else:
                    values.blobs[attr] = r.bytes_()
            field = _next_field(r, field, len(wire.fields))
        if r.remaining():
            raise GobError("extra bytes after the value")
        return values


def _encode_struct_frame(name: str, ours: tuple[tuple[str, str, int], ...], obj: object) -> bytes:
    definition = bytearray()
    definition.append(3)  # wireType field 2 (StructT): delta 3 from -1
    definition.append(1)  # structType field 0: CommonType
    definition.append(1)  # CommonType field 0: Name
    _put_string(definition, name)
    definition.append(1)  # CommonType field 1: Id
    _put_int(definition, _OUR_TYPE_ID)
    definition.append(0)  # end of CommonType
    definition.append(1)  # structType field 1: Field
    _put_uint(definition, len(ours))
    for go_name, _, type_id in ours:
        definition.append(1)  # fieldType field 0: Name
        _put_string(definition, go_name)
        definition.append(1)  # fieldType field 1: Id
        _put_int(definition, type_id)
        definition.append(0)
    definition += b"\x00\x00"  # end of structType, end of wireType

    value = bytearray()
    last = -1
    for number, (_, attr, type_id) in enumerate(ours):
        field_value = getattr(obj, attr)
        if not field_value:  # gob omits zero fields
            continue
        _put_uint(value, number - last)
        last = number
        if type_id == _INT:
            if not isinstance(field_value, int) or isinstance(field_value, bool):
                raise GobError(f"{attr} must be an int")
            _put_int(value, field_value)
        elif type_id == _STRING:
            if not isinstance(field_value, str):
                raise GobError(f"{attr} must be a str")
            _put_string(value, field_value)
        else:
            if not isinstance(field_value, bytes | bytearray | memoryview):
                raise GobError(f"{attr} must be bytes")
            _put_bytes(value, bytes(field_value))
    value.append(0)

    out = bytearray()
    _put_message(out, -_OUR_TYPE_ID, bytes(definition))
    _put_message(out, _OUR_TYPE_ID, bytes(value))
    if len(out) > MAX_GOB_FRAME_BYTES:
        raise GobError(f"frame of {len(out)} bytes exceeds {MAX_GOB_FRAME_BYTES}")
    return bytes(out)


def decode_request(frame: bytes, check_range: bool = True) -> GeneralWsReq:
    """A request as openim-sdk-core sends it (one fresh Go encoder per frame). Raises GobError.

    Go's int is 64 bits, but every ReqIdentifier is an int32 (the gateway answers with one): a value
    outside that range is refused here rather than carried into an answer we could not encode
    (`check_range=False` keeps it, for reading a refused frame's other fields).
    """
    v = _decode_struct_frame(frame, _REQ_FIELDS)
    req_identifier = v.ints.get("req_identifier", 0)
    if check_range and not _INT32_MIN <= req_identifier <= _INT32_MAX:
        raise GobError(f"req_identifier out of int32 range: {req_identifier}")
    return GeneralWsReq(
        req_identifier=req_identifier,
        token=v.strings.get("token", ""),
        send_id=v.strings.get("send_id", ""),
        operation_id=v.strings.get("operation_id", ""),
        msg_incr=v.strings.get("msg_incr", ""),
        data=v.blobs.get("data", b""),
    )


def encode_request(req: GeneralWsReq) -> bytes:
    """A request frame, byte for byte as openim-sdk-core's Go encoder writes it."""
    return _encode_struct_frame("GeneralWsReq", _REQ_FIELDS, req)


def encode_response(resp: GeneralWsResp) -> bytes:
    """An answer or push frame, byte for byte as open-im-server's gateway writes its ``Resp``.

    The gateway's ReqIdentifier is an int32: a value outside that range raises GobError.
    """
    if isinstance(resp.req_identifier, int) and not _INT32_MIN <= resp.req_identifier <= _INT32_MAX:
        raise GobError(f"req_identifier out of int32 range: {resp.req_identifier}")
    return _encode_struct_frame("Resp", _RESP_FIELDS, resp)


def decode_response(frame: bytes) -> GeneralWsResp:
    """An answer or push frame, whatever struct (Resp, GeneralWsResp) and field order. Raises GobError."""
    v = _decode_struct_frame(frame, _RESP_FIELDS)
    return GeneralWsResp(
        req_identifier=v.ints.get("req_identifier", 0),
        err_code=v.ints.get("err_code", 0),
        err_msg=v.strings.get("err_msg", ""),
        msg_incr=v.strings.get("msg_incr", ""),
        operation_id=v.strings.get("operation_id", ""),
        data=v.blobs.get("data", b""),
    )
