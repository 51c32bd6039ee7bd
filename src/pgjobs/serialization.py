"""Job arguments to JSON and back, losslessly and without pickle.

The stored form (the jobs' ``arguments`` jsonb column) is ``{"args": [...], "kwargs": {...}}``,
both keys always present (plus ``"trace"``, the enqueue's trace context, when tracing is on: see
:func:`dumps_arguments`). Values JSON holds exactly are stored as themselves: ``str``, ``int``,
finite ``float``, ``bool``, ``None``, ``list``, and ``dict`` with ``str`` keys. Anything else
is a *tagged object*, a JSON object with the reserved key ``"__pgjobs__"``::

    {"__pgjobs__": "<tag>", "v": <payload>, ...}

=========  ====================================================  ===============================
tag        payload ``v`` (and extra keys)                        used for
=========  ====================================================  ===============================
tuple      list of values                                        ``tuple``
set        list of values                                        ``set``
frozenset  list of values                                        ``frozenset``
dict       list of ``[key, value]`` pairs                        dicts with a non-str key, with
                                                                 the key ``"__pgjobs__"`` (this
                                                                 is the escape) or a NUL in a key
float      ``repr()``: ``"nan"``, ``"-inf"``, ``"1e+16"``, ...   nan, ±inf, -0.0, abs >= 1e16
int        hex string                                            ints of 4000+ digits
str        base64 of the UTF-8 (surrogatepass)                   str with NUL or lone surrogates
bytes      base64                                                ``bytes``
datetime   ``isoformat()``; ``"tz"``: ZoneInfo key; ``"tzname"``:  ``datetime``
           name of a named ``timezone``; ``"fold": 1`` if set
time       as for datetime                                       ``time``
date       ``isoformat()``                                       ``date``
timedelta  ``[days, seconds, microseconds]``                     ``timedelta``
decimal    ``str()``                                             ``Decimal``
uuid       ``str()``                                             ``UUID``
enum       the member's value; ``"cls": "module:QualName"``      ``Enum`` members
object     the encoded instance; ``"type"``: registered name     :func:`register_type` classes
record     a reference to a database row; ``"kind"``: its        model instances (Django,
           :func:`register_records` kind                         SQLAlchemy): loaded afresh
=========  ====================================================  ===============================

Payloads are encoded recursively (a tuple of datetimes is a tagged list of tagged datetimes).
The float, int and str tags exist because of jsonb, which stores numbers as ``numeric`` (so
``1e+16`` would come back as the int ``10000000000000000`` and ``-0.0`` as ``0.0``), cannot hold
``\\u0000`` or lone surrogates, and sorts object keys, so a dict's key *order* is not kept (its
contents are). Types match exactly: ``bool`` is never taken for ``int``, and subclasses
(``OrderedDict``, namedtuples, ``str`` subclasses) are refused rather than silently converted,
except ``Enum`` members, whose class is imported by name when decoding. Unsupported values raise
:class:`~pgjobs.errors.SerializationError` when serializing; bad stored data raises
:class:`~pgjobs.errors.DeserializationError`.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Any, NamedTuple, TypeVar, cast
from uuid import UUID
from zoneinfo import ZoneInfo

from pgjobs.errors import DeserializationError, SerializationError

__all__ = [
    "deserialize_arguments",
    "dumps_arguments",
    "register_records",
    "register_type",
    "serialize_arguments",
]

TAG = "__pgjobs__"
_T = TypeVar("_T")
_DT = TypeVar("_DT", datetime, time)
_HUGE = 10**4000  # int <-> str refuses more than 4300 digits
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _json_function() -> Callable[[Any], str]:
    """``_JSON.encode`` without building a new C encoder on every call (~0.7 µs of a 2 µs
    enqueue's arguments): the same C function with the same settings, made once.

    Its circular-reference check is off: it only ever sees what :func:`serialize_arguments`
    built — fresh lists and dicts of encoded values, which cannot hold a cycle (one in the
    caller's arguments stops the encoding there, as a RecursionError).  Without the C
    accelerator (another Python implementation) it is ``_JSON.encode`` itself.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return _JSON.encode
    encoder = make(
        None, _JSON.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
    join = "".join

    def encode(value: Any) -> str:
        return join(encoder(value, 0))

    return encode


_dumps = _json_function()
_SUPPORTED = (
    "str, int, float, bool, None, list, tuple, dict, set, frozenset, bytes, datetime, date, "
    "time, timedelta, Decimal, UUID, Enum members, classes registered with "
    "pgjobs.register_type, and model instances of a registered integration"
)


class _EncodeError(Exception):
    """Internal: a value cannot be encoded; ``path`` collects segments while unwinding."""

    def __init__(self, problem: str) -> None:
        self.problem, self.path = problem, list[str]()


class _Records(NamedTuple):
    kind: str
    match: Callable[[type], bool]
    reference: Callable[[Any], Any]
    load: Callable[[Any], object]


_RECORDS: dict[str, _Records] = {}
_RECORDS_BY_CLASS: dict[type, _Records | None] = {}  # a class's kind, once asked (None: none)


class _Registration(NamedTuple):
    name: str
    cls: type
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


_BY_CLASS: dict[type, _Registration] = {}
_BY_NAME: dict[str, _Registration] = {}


def _tagged(tag: str, v: Any, **extra: Any) -> dict[str, Any]:
    return {TAG: tag, "v": v, **extra}


def _plain_str(v: str) -> bool:
    return "\x00" not in v and (v.isascii() or _SURROGATE.search(v) is None)


def _plain_float(v: float) -> bool:
    return -1e16 < v < 1e16 and (v != 0.0 or math.copysign(1.0, v) > 0)


def _is_plain(values: Iterable[Any]) -> bool:
    """True if every value is a scalar stored as itself: the fast path."""
    for v in values:
        t = type(v)
        if t is str:
            if "\x00" in v or (not v.isascii() and _SURROGATE.search(v)):
                return False
        elif t is int:
            if not -_HUGE < v < _HUGE:
                return False
        elif t is float:
            if not -1e16 < v < 1e16 or (v == 0.0 and math.copysign(1.0, v) < 0):
                return False
        elif t is not bool and v is not None:
            return False
    return True


def _plain_keys(kwargs: Mapping[str, object]) -> bool:
    return _is_plain(kwargs) and all(type(k) is str for k in kwargs)


def _encode(v: Any) -> Any:
    t = type(v)
    if t is str:
        return v if _plain_str(v) else _tagged("str", _b64(v.encode("utf-8", "surrogatepass")))
    if t is int:
        return v if -_HUGE < v < _HUGE else _tagged("int", format(v, "x"))
    if t is float:
        return v if _plain_float(v) else _tagged("float", repr(v))
    if t is bool or v is None:
        return v
    if t is list:
        return [_encode_at(x, i) for i, x in enumerate(v)]
    if t is dict:
        if all(type(k) is str and k != TAG and _plain_str(k) for k in v):
            return {k: _encode_at(x, k) for k, x in v.items()}
        pairs = [[_encode_at(k, k, "<key {!r}>"), _encode_at(x, k)] for k, x in v.items()]
        return _tagged("dict", pairs)
    encoder = _ENCODERS.get(t)
    if encoder is not None:
        return encoder(v)
    registration = _BY_CLASS.get(t)
    if registration is not None:
        try:
            payload = registration.encode(v)
        except Exception as exc:
            problem = f"the encode function registered for {registration.name} failed: {exc!r}"
            raise _EncodeError(problem) from exc
        return _tagged("object", _encode(payload), type=registration.name)
    records = _RECORDS_BY_CLASS[t] if t in _RECORDS_BY_CLASS else _records_for(t)
    if records is not None:
        try:
            reference = records.reference(v)
        except (SerializationError, ValueError) as exc:
            raise _EncodeError(str(exc)) from exc
        except Exception as exc:
            raise _EncodeError(f"the {records.kind} reference of it failed: {exc!r}") from exc
        return _tagged("record", _encode(reference), kind=records.kind)
    if isinstance(v, Enum):
        cls = type(v)
        if "<locals>" in cls.__qualname__:
            raise _EncodeError(f"enum {_type_name(cls)} is defined in a function: not importable")
        value = _encode_at(v.value, None, ".value")
        return _tagged("enum", value, cls=f"{cls.__module__}:{cls.__qualname__}")
    raise _unsupported(v)


def _encode_at(v: Any, key: object, segment: str = "[{!r}]") -> Any:
    """Encode ``v``, found at ``key`` in its container (named in an error's path)."""
    try:
        return _encode(v)
    except _EncodeError as e:
        e.path.append(segment.format(key))
        raise


def _tz_fields(v: datetime | time) -> dict[str, Any]:
    out: dict[str, Any] = {"fold": 1} if v.fold else {}
    tz = v.tzinfo
    if isinstance(tz, ZoneInfo):
        if tz.key is None:
            raise _EncodeError("a ZoneInfo without a key (made by ZoneInfo.from_file)")
        out["tz"] = tz.key
    elif type(tz) is timezone:
        if tz.tzname(None) != timezone(tz.utcoffset(None)).tzname(None):
            out["tzname"] = tz.tzname(None)
    elif tz is not None:
        problem = f"{type(v).__name__} with tzinfo of unsupported type {_type_name(type(tz))}"
        raise _EncodeError(problem + " (use zoneinfo.ZoneInfo or datetime.timezone)")
    return out


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _items(tag: str) -> Callable[[Any], Any]:
    return lambda v: _tagged(tag, [_encode_at(x, i) for i, x in enumerate(v)])


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    tuple: _items("tuple"),
    set: _items("set"),
    frozenset: _items("frozenset"),
    bytes: lambda v: _tagged("bytes", _b64(v)),
    datetime: lambda v: _tagged("datetime", v.isoformat(), **_tz_fields(v)),
    date: lambda v: _tagged("date", v.isoformat()),
    time: lambda v: _tagged("time", v.isoformat(), **_tz_fields(v)),
    timedelta: lambda v: _tagged("timedelta", [v.days, v.seconds, v.microseconds]),
    Decimal: lambda v: _tagged("decimal", str(v)),
    UUID: lambda v: _tagged("uuid", str(v)),
}


def _type_name(t: type) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _unsupported(v: object) -> _EncodeError:
    problem = f"unsupported type {_type_name(type(v))}"
    base = next((b for b in (str, int, float, list, dict, *_ENCODERS) if isinstance(v, b)), None)
    if base is not None:
        problem += (
            f" (subclasses of {base.__name__} are not converted implicitly: pass a plain "
            f"{base.__name__}, or register the class with pgjobs.register_type)"
        )
    elif type(v).__module__ != "builtins":
        problem += " (register it with pgjobs.register_type)"
    return _EncodeError(problem)


def serialize_arguments(
    args: Sequence[object], kwargs: Mapping[str, object], *, context: str = "job"
) -> dict[str, Any]:
    """Return ``{"args": [...], "kwargs": {...}}``, ready for ``json.dumps``.

    ``context`` (e.g. ``"SendEmail.perform_later"``) is quoted in error messages. Raises
    :class:`~pgjobs.errors.SerializationError` naming the argument (positions count from 0),
    the path inside it (``argument 2 at args[2][3]['when']``), the offending type, and the
    supported types.
    """
    if _is_plain(args) and _is_plain(kwargs.values()) and _plain_keys(kwargs):
        return {"args": list(args), "kwargs": dict(kwargs)}
    out_args: list[Any] = []
    out_kwargs: dict[str, Any] = {}
    position: int | None = None
    key: object = None
    try:
        for position, arg in enumerate(args):  # noqa: B007 - read by the handler
            out_args.append(_encode(arg))
        position = None
        for key, value in kwargs.items():
            if type(key) is not str or not _plain_str(key):
                raise _EncodeError("keyword argument names must be str without NUL characters")
            out_kwargs[key] = _encode(value)
    except (_EncodeError, RecursionError) as e:
        if position is None:
            where, root = f"keyword argument {key!r}", f"kwargs[{key!r}]"
        else:
            where, root = f"argument {position}", f"args[{position}]"
        if isinstance(e, RecursionError):
            message = f"Cannot serialize {where} of {context}: too deeply nested, or a cycle."
            raise SerializationError(message) from None
        if e.path:
            where += f" at {root}{''.join(reversed(e.path))}"
        message = f"Cannot serialize {where} of {context}: {e.problem}. Supported: {_SUPPORTED}."
        raise SerializationError(message) from e.__cause__
    return {"args": out_args, "kwargs": out_kwargs}


def dumps_plain(
    args: Sequence[object], kwargs: Mapping[str, object], trace: Mapping[str, str] | None = None
) -> str | None:
    """:func:`dumps_arguments`' text when the arguments are plain positional scalars (no
    keywords, no trace context: the common case), else ``None``.  The same text, ~1 µs sooner:
    no intermediate dict, and no error context to format (none can be raised)."""
    if trace is None and not kwargs and type(args) is tuple and _is_plain(args):
        return f'{{"args":{_dumps(args)},"kwargs":{{}}}}'
    return None


def dumps_arguments(
    args: Sequence[object],
    kwargs: Mapping[str, object],
    *,
    context: str = "job",
    trace: Mapping[str, str] | None = None,
) -> str:
    """:func:`serialize_arguments` as compact JSON text: the enqueue hot path.

    ``trace``: the propagated trace context of the enqueue (set only when tracing is on, see
    :mod:`pgjobs.observability.tracing`), stored under a ``"trace"`` key beside ``args`` and
    ``kwargs``; :func:`deserialize_arguments` ignores it.
    """
    plain = dumps_plain(args, kwargs, trace)
    if plain is not None:
        return plain
    data = serialize_arguments(args, kwargs, context=context)
    if trace is not None:
        data["trace"] = dict(trace)
    return _dumps(data)


def row_type_error(row: object, i: int, context: str) -> TypeError:
    """The error for a row of :func:`dumps_rows` that is no tuple or list."""
    return TypeError(
        f"row {i} of {context} is {row!r:.80} ({type(row).__name__}): each row is a tuple (or "
        "list) of one job's positional arguments, e.g. (1,) or ('a', 2)"
    )


def dumps_rows(rows: Iterable[object], *, context: str) -> list[str]:
    """``dumps_arguments(row, {})`` of every row, each the positional arguments of one job: the
    arguments of many jobs of one class at once (``perform_all_later_args``).

    A row is a tuple or a list.  An error names the row, counted from 0:
    ``Cannot serialize argument 1 of <context> row 3: ...``; a row that is no tuple or list
    (a str would be taken apart into characters) raises :class:`TypeError` naming it.
    """
    texts: list[str] = []
    append = texts.append
    dumps = _dumps
    for i, row in enumerate(rows):
        if type(row) is tuple:
            args = row
        elif type(row) is list:
            args = tuple(row)
        else:
            raise row_type_error(row, i, context)
        if _is_plain(args):  # dumps_arguments' shortcut, without a call and a context per row
            append(f'{{"args":{dumps(args)},"kwargs":{{}}}}')
        else:
            append(dumps_arguments(args, {}, context=f"{context} row {i}"))
    return texts


def deserialize_arguments(
    data: Mapping[str, Any] | str,
) -> tuple[tuple[object, ...], dict[str, object]]:
    """Turn the stored form (a mapping, or its JSON text) back into ``(args, kwargs)``; raises
    DeserializationError."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise DeserializationError(f"stored job arguments are not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise DeserializationError(f"stored job arguments are malformed: {data!r:.200}")
    raw_args, raw_kwargs = data.get("args", []), data.get("kwargs", {})
    if type(raw_args) is not list or type(raw_kwargs) is not dict:
        raise DeserializationError(f"stored job arguments are malformed: {data!r:.200}")
    if all(type(a) in _JSON_SCALARS for a in raw_args):
        args = tuple(raw_args)
    else:
        args = tuple([_decode(a) for a in raw_args])
    if all(type(v) in _JSON_SCALARS for v in raw_kwargs.values()):
        return args, dict(raw_kwargs)
    return args, {k: _decode(v) for k, v in raw_kwargs.items()}


def dumps_value(value: object, *, context: str = "value") -> str:
    """One value (a job's result, a step's cursor) as compact JSON text, with the same lossless
    encoding as arguments; raises :class:`~pgjobs.errors.SerializationError` naming ``context``."""
    try:
        encoded = serialize_arguments((value,), {}, context=context)["args"][0]
    except SerializationError as exc:  # "argument 0 at args[0]<path> of <context>: ..."
        where = re.match(r"Cannot serialize argument 0(?: at args\[0\](\S*))? of ", str(exc))
        rest = str(exc)[where.end() :] if where else str(exc)
        path = f" at {where.group(1)}" if where and where.group(1) else ""
        message = rest.replace(f"{context}:", f"{context}{path}:", 1) if where else rest
        raise SerializationError(f"Cannot serialize {message}") from exc.__cause__
    return _dumps(encoded)


def loads_value(data: Any) -> object:
    """A value stored by :func:`dumps_value` (its JSON text, or the parsed JSON), back in Python."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise DeserializationError(f"stored value is not JSON: {exc}") from exc
    if type(data) in _JSON_SCALARS:
        return data
    return _decode(data)


def _decode(x: Any) -> Any:
    t = type(x)
    if t is dict:
        return _decode_tagged(x) if TAG in x else {k: _decode(v) for k, v in x.items()}
    return [_decode(v) for v in x] if t is list else x


def _decode_tagged(d: dict[str, Any]) -> object:
    tag = d[TAG]
    decoder = _DECODERS.get(tag) if type(tag) is str else None
    if decoder is None:
        raise DeserializationError(f"unknown tag {tag!r} in stored job arguments: {d!r:.200}")
    if tag == "record":
        # A loader's own errors pass as they are: a database that is down is not a deleted row,
        # and must not be discarded by ``discard_on = [DeserializationError]``.
        return decoder(d)
    try:
        return decoder(d)
    except DeserializationError:
        raise
    except Exception as exc:
        raise DeserializationError(f"cannot decode stored {tag} {d!r:.200}: {exc!r}") from exc


def _with_tz(d: Mapping[str, Any], v: _DT) -> _DT:
    if "tz" in d:
        v = v.replace(tzinfo=ZoneInfo(d["tz"]))
    elif "tzname" in d:
        v = v.replace(tzinfo=timezone(v.utcoffset() or timedelta(0), d["tzname"]))
    return v.replace(fold=1) if d.get("fold") else v


def _decode_enum(d: Mapping[str, Any]) -> object:
    module, _, qualname = d["cls"].partition(":")
    try:
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError) as exc:
        raise DeserializationError(f"cannot import enum class {d['cls']!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Enum)):
        raise DeserializationError(f"stored enum class {d['cls']!r} is not an Enum")
    return cls(_decode(d["v"]))


def _decode_record(d: Mapping[str, Any]) -> object:
    if type(d.get("kind")) is not str or "v" not in d:
        raise DeserializationError(f"cannot decode stored record {d!r:.200}")
    records = _RECORDS.get(d["kind"])
    if records is None:
        raise DeserializationError(
            f"no record kind {d['kind']!r} is registered: import its integration "
            f"(e.g. pgjobs.contrib.{d['kind']}) in the worker before running the job"
        )
    return records.load(_decode(d["v"]))  # DeserializationError: the row is gone


def _decode_object(d: Mapping[str, Any]) -> object:
    registration = _BY_NAME.get(d["type"])
    if registration is None:
        raise DeserializationError(
            f"no type is registered under the name {d['type']!r}: import the module that "
            "registers it with pgjobs.register_type before running the job"
        )
    return registration.decode(_decode(d["v"]))


_DECODERS: dict[str, Callable[[dict[str, Any]], object]] = {
    "tuple": lambda d: tuple(_decode(d["v"])),
    "set": lambda d: set(_decode(d["v"])),
    "frozenset": lambda d: frozenset(_decode(d["v"])),
    "dict": lambda d: {_decode(k): _decode(v) for k, v in d["v"]},
    "float": lambda d: float(d["v"]),
    "int": lambda d: int(d["v"], 16),
    "str": lambda d: base64.b64decode(d["v"], validate=True).decode("utf-8", "surrogatepass"),
    "bytes": lambda d: base64.b64decode(d["v"], validate=True),
    "datetime": lambda d: _with_tz(d, datetime.fromisoformat(d["v"])),
    "date": lambda d: date.fromisoformat(d["v"]),
    "time": lambda d: _with_tz(d, time.fromisoformat(d["v"])),
    "timedelta": lambda d: timedelta(*d["v"]),
    "decimal": lambda d: Decimal(d["v"]),
    "uuid": lambda d: UUID(d["v"]),
    "enum": _decode_enum,
    "object": _decode_object,
    "record": _decode_record,
}


def register_records(
    kind: str,
    *,
    match: Callable[[type], bool],
    reference: Callable[[Any], Any],
    load: Callable[[Any], object],
) -> None:
    """Store instances of the classes ``match`` accepts as *references* to their rows, loaded
    afresh when the job runs (ActiveJob's GlobalID): what the integrations use for model
    instances (``pgjobs.contrib.django``, ``pgjobs.contrib.sqlalchemy``).

    ``reference(instance)`` returns what identifies the row (any supported value: e.g. the model's
    name and primary key) and raises ``ValueError`` or SerializationError, with a message saying
    why, for an instance that has no row (unsaved).  ``load(reference)`` returns a fresh instance
    and raises :class:`~pgjobs.errors.DeserializationError` when the row is gone, so
    ``discard_on = [pgjobs.DeserializationError]`` discards a job whose record was deleted.
    ``match(cls)`` is asked once per class.  Registering a ``kind`` again replaces it.
    """
    if kind in _DECODERS or not kind.isidentifier():
        raise ValueError(f"record kind {kind!r}: give a name such as 'django'")
    _RECORDS[kind] = _Records(kind, match, reference, load)
    _RECORDS_BY_CLASS.clear()


def _records_for(t: type) -> _Records | None:
    """The record kind whose ``match`` accepts ``t`` (asked once per class)."""
    found = next((r for r in _RECORDS.values() if r.match(t)), None)
    _RECORDS_BY_CLASS[t] = found
    return found


def _dataclass_decoder(cls: type) -> Callable[[dict[str, Any]], object]:
    init = {f.name for f in dataclasses.fields(cls) if f.init}

    def decode(data: dict[str, Any]) -> object:
        obj = cls(**{k: v for k, v in data.items() if k in init})
        for k, v in data.items():
            if k not in init:  # an init=False field: restore the stored value
                object.__setattr__(obj, k, v)
        return obj

    return decode


def register_type(
    cls: type[_T],
    *,
    name: str | None = None,
    encode: Callable[[Any], Any] | None = None,
    decode: Callable[[Any], Any] | None = None,
) -> type[_T]:
    """Allow instances of exactly ``cls`` (not subclasses) in job arguments; returns ``cls``.

    Returning ``cls`` makes it a class decorator too: ``@register_type`` (for options use the
    call form, ``register_type(Invoice, name="billing.Invoice")``). ``name`` is what is stored,
    by default ``"module.QualName"``; keep it when a class moves so queued jobs still decode.
    Dataclasses are stored as a dict of all their fields and rebuilt with ``cls(**init_fields)``
    (``init=False`` fields are then set directly); classes with ``model_dump`` and
    ``model_validate`` (pydantic models) use those. Other classes need ``encode`` (instance ->
    any supported value) and ``decode`` (that value -> instance). Encoded values are serialized
    recursively, so they may hold datetimes, other registered classes, and so on.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_type() needs a class, not {cls!r}")
    if cls in _ENCODERS or cls in _JSON_SCALARS or cls in (list, dict):
        raise TypeError(f"{cls.__name__} is supported already and cannot be registered")
    qualified = f"{cls.__module__}.{cls.__qualname__}"
    name = name or qualified
    if encode is None or decode is None:
        if dataclasses.is_dataclass(cls):
            encode = encode or (
                lambda o: {f.name: getattr(o, f.name) for f in dataclasses.fields(o)}
            )
            decode = decode or _dataclass_decoder(cls)
        elif hasattr(cls, "model_dump") and hasattr(cls, "model_validate"):
            encode = encode or (lambda o: o.model_dump())
            decode = decode or cast(Any, cls).model_validate
        else:
            raise TypeError(
                f"{qualified} is no dataclass or pydantic model: pass encode and decode"
            )
    old = _BY_NAME.get(name)
    if old is not None and f"{old.cls.__module__}.{old.cls.__qualname__}" != qualified:
        raise ValueError(f"the type name {name!r} is already registered for {old.cls!r}")
    _BY_CLASS[cls] = _BY_NAME[name] = _Registration(name, cls, encode, decode)
    return cls
