"""Public job ids (random UUIDs, version 4), made cheaply: one per job on the enqueue hot path.

:func:`new_job_id` is :func:`uuid.uuid4` without ``UUID.__init__``'s checks (~0.5 µs instead of
~1.4 µs): 16 bytes from :func:`os.urandom`, the version and variant bits set on the integer, the
object filled in as ``uuid`` itself does for its newer ids (``UUID._from_int`` in Python 3.14).
:func:`random_ids` makes ``n`` of them at once as bytes, with one ``os.urandom`` call, for
``perform_all_later_args`` (which stores them without making ``UUID`` objects at all).

:func:`new_job_id` reads the kernel's randomness for 64 ids at a time (one system call instead
of 64: ~0.2 µs per id); a forked child drops what its parent had read and not used
(:func:`os.register_at_fork`), so two processes never hand out the same id.  Taking an id is one
``list.pop``: safe across threads.  :func:`random_ids` reads its bytes per call.
"""

from __future__ import annotations

import os
import uuid

# The version (4) and variant (RFC 4122) bits of a random UUID, as uuid.UUID(version=4) sets them.
_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_SET = (4 << 76) | (0x8000 << 48)
# The same on bytes: byte 6 holds the version nibble, byte 8 the variant bits.
_VERSION = bytes((b & 0x0F) | 0x40 for b in range(256))
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))

_new = object.__new__
_set = object.__setattr__
_from_bytes = int.from_bytes
_UNKNOWN = uuid.SafeUUID.unknown
_UUID = uuid.UUID


#: Random version-4 UUIDs as ints, read ahead; taken from the end.
_ahead: list[int] = []
_AHEAD = 64
_take = _ahead.pop


def _read_ahead() -> int:
    raw = os.urandom(16 * _AHEAD)
    values = [_from_bytes(raw[i : i + 16]) & _CLEAR | _SET for i in range(0, 16 * _AHEAD, 16)]
    value = values.pop()
    _ahead.extend(values)
    return value


if hasattr(os, "register_at_fork"):  # POSIX: a child must not repeat its parent's ids
    os.register_at_fork(after_in_child=_ahead.clear)


def _fast() -> uuid.UUID:
    """:func:`uuid.uuid4`: the same bits, without ``UUID.__init__``."""
    try:
        number = _take()
    except IndexError:
        number = _read_ahead()
    value = _new(_UUID)
    _set(value, "int", number)
    _set(value, "is_safe", _UNKNOWN)
    return value


def _works() -> bool:
    """Whether this Python's UUID is built as :func:`_fast` expects (its slots ``int`` and
    ``is_safe``); if a future version changes that, :func:`uuid.uuid4` is used instead."""
    try:
        made = _fast()
        again = uuid.UUID(str(made))
        return made == again and hash(made) == hash(again) and made.version == 4
    except (AttributeError, TypeError, ValueError):  # pragma: no cover - a different UUID class
        return False


#: A random (version 4) UUID: :func:`uuid.uuid4`, faster.
new_job_id = _fast if _works() else uuid.uuid4


def random_ids(n: int) -> bytearray:
    """``n`` random version-4 UUIDs as 16 bytes each, end to end (``n * 16`` bytes)."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = raw[6::16].translate(_VERSION)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    return raw
