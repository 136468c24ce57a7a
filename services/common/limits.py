"""Size limits on every field of every protocol message, checked where a message enters.

gRPC bounds a whole message (``limits.max_message_bytes``); that alone lets one peer send a
string or list as large as the message, which the receiver then keeps, logs, forwards or
resends (a client's ``device`` string of 1 MiB copied into every roster its edge sends, say).
:func:`check_message` walks a received message and refuses it when any string, bytes or
repeated field is longer than its limit here, naming the field.

The walk reads only the message's own descriptors (``ListFields``), so this module needs no
generated code and works for every message type, present and future: a field without an entry
below gets the default limit of its kind. Limits are generous for honest peers (a device name
is ``"cpu"``, a label a few words) and small enough that nothing a peer sends can make a
receiver hold or forward much more than the peer itself sent.
"""

from __future__ import annotations

from typing import Any

from services.common.rejections import LimitExceeded

__all__ = [
    "MAX_BYTES",
    "MAX_CLIENT_ID_CHARS",
    "MAX_DEVICE_CHARS",
    "MAX_LIST",
    "MAX_TEXT",
    "check_message",
    "check_text",
]

MAX_TEXT = 256
"""Characters of a string field without its own entry in :data:`TEXT_LIMITS`."""

MAX_BYTES = 1 << 20
"""Bytes of a bytes field without its own entry (a ciphertext or adapter chunk: 1 MiB)."""

MAX_LIST = 100_000
"""Entries of a repeated field without its own entry (rosters, plans, contributor lists; the
message size bounds them further)."""

MAX_DEVICE_CHARS = 64
MAX_CLIENT_ID_CHARS = 64  # the longest certificate id (services.common.certs)
_MAX_KEY_LIST_CHARS = MAX_LIST * (MAX_CLIENT_ID_CHARS + 1) + 128  # "<edge>:<round>:" + client ids

_PKG = "ffalora.v1."

TEXT_LIMITS: dict[str, int] = {
    _PKG + "ClientHello.device": MAX_DEVICE_CHARS,
    _PKG + "ClientHello.agent_version": 64,
    _PKG + "RosterEntry.device": MAX_DEVICE_CHARS,
    _PKG + "RosterEntry.client_id": MAX_CLIENT_ID_CHARS,
    _PKG + "ClientAssignment.client_id": MAX_CLIENT_ID_CHARS,
    _PKG + "Contribution.client_id": MAX_CLIENT_ID_CHARS,
    _PKG + "ModelSpec.name_or_path": 1024,
    _PKG + "Status.message": 2048,
    _PKG + "Shutdown.reason": 2048,
    _PKG + "ClientGoodbye.reason": 256,
    # an edge's partial-sum key lists its contributors (EdgeAggregator._forward)
    _PKG + "PartialSumCommit.idempotency_key": _MAX_KEY_LIST_CHARS,
    _PKG + "PartialSumAck.idempotency_key": _MAX_KEY_LIST_CHARS,
}
"""Characters allowed per string field (full protobuf field name)."""

BYTES_LIMITS: dict[str, int] = {
    _PKG + "PublicKey.n": 1024,  # a 3072-bit modulus is 384 bytes
    _PKG + "SecureSumSpec.layout": 1024,
    _PKG + "CiphertextHeader.header": 4096,
    # chunks over 1 MiB are refused in band, with their upload, by services.common.transfer
    _PKG + "CiphertextChunk.data": 2 * MAX_BYTES,
    _PKG + "AdapterChunk.data": 2 * MAX_BYTES,
}
"""Bytes allowed per bytes field."""

LIST_LIMITS: dict[str, int] = {
    _PKG + "ModelSpec.labels": 4096,
    _PKG + "ModelSpec.target_modules": 256,
}
"""Entries allowed per repeated field."""

_STRING, _BYTES, _MESSAGE = 9, 12, 11  # FieldDescriptor.TYPE_STRING, TYPE_BYTES, TYPE_MESSAGE


def check_text(field: str, value: str, limit: int) -> str:
    """``value`` when it has at most ``limit`` characters; LimitExceeded naming ``field`` else."""
    if len(value) > limit:
        raise LimitExceeded("field_too_long",
                            f"{field} has {len(value)} characters; at most {limit} are allowed")
    return value


def _short(full_name: str) -> str:
    return full_name.removeprefix(_PKG)


def _check_scalar(fd: Any, value: Any) -> None:
    if fd.type == _STRING:
        check_text(_short(fd.full_name), value, TEXT_LIMITS.get(fd.full_name, MAX_TEXT))
    elif fd.type == _BYTES:
        limit = BYTES_LIMITS.get(fd.full_name, MAX_BYTES)
        if len(value) > limit:
            raise LimitExceeded("field_too_long",
                                f"{_short(fd.full_name)} has {len(value)} bytes; at most {limit} are allowed")


def check_message(msg: Any, *, _depth: int = 0) -> None:
    """Refuse ``msg`` (a protobuf message) when any field is longer than its limit.

    Raises:
        LimitExceeded: reason ``field_too_long`` (a string or bytes field) or
            ``list_too_long`` (a repeated field), with a message naming the field, its
            length and the limit.
    """
    if _depth > 16:  # the protocol nests four levels; deeper is not ours
        raise LimitExceeded("field_too_long", "message nests too deeply")
    for fd, value in msg.ListFields():
        if fd.is_repeated:
            limit = LIST_LIMITS.get(fd.full_name, MAX_LIST)
            if len(value) > limit:
                raise LimitExceeded("list_too_long",
                                    f"{_short(fd.full_name)} has {len(value)} entries; at most {limit} are allowed")
            items = value
        else:
            items = (value,)
        for item in items:
            if fd.type == _MESSAGE:
                check_message(item, _depth=_depth + 1)
            else:
                _check_scalar(fd, item)
