"""Tests for pgjobs.serialization: lossless round trips, the stored format, and error messages."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections import OrderedDict
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any, NamedTuple
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest

from pgjobs.errors import DeserializationError, SerializationError
from pgjobs.serialization import (
    deserialize_arguments,
    dumps_arguments,
    register_type,
    serialize_arguments,
)

NEW_YORK = ZoneInfo("America/New_York")
IST = timezone(timedelta(hours=5, minutes=30))


class Color(enum.Enum):
    RED = "red"
    PAIR = (1, 2)


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    READ = 1
    WRITE = 2


class Outer:
    class Inner(enum.Enum):
        A = 1


class Pair(NamedTuple):
    a: int
    b: int


@register_type
@dataclasses.dataclass(frozen=True)
class Address:
    city: str
    since: date


@register_type
@dataclasses.dataclass
class User:
    name: str
    address: Address
    tags: tuple[str, ...] = ()
    created: datetime | None = None
    slug: str = dataclasses.field(init=False, default="")

    def __post_init__(self) -> None:
        self.slug = self.name.lower()


@dataclasses.dataclass
class Unregistered:
    x: int


class FakeModel:
    """Quacks like a pydantic model: model_dump / model_validate."""

    def __init__(self, *, when: datetime, amount: Decimal) -> None:
        self.when, self.amount = when, amount

    def model_dump(self) -> dict[str, Any]:
        return {"when": self.when, "amount": self.amount}

    @classmethod
    def model_validate(cls, data: dict[str, Any]) -> FakeModel:
        return cls(**data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeModel) and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]


register_type(FakeModel)


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))


register_type(Point, name="tests.Point", encode=lambda p: [p.x, p.y], decode=lambda v: Point(*v))


def assert_identical(got: object, expected: object) -> None:
    """Equal, of the same types all the way down, with the same tzinfo, fold and float sign."""
    assert type(got) is type(expected), (got, expected)
    if isinstance(expected, float):
        assert isinstance(got, float)
        assert repr(got) == repr(expected)  # nan == nan, -0.0 != 0.0
    elif isinstance(expected, Decimal):
        assert repr(got) == repr(expected)  # keeps the exponent; NaN compares by repr
    elif isinstance(expected, list | tuple):
        assert isinstance(got, list | tuple)
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert_identical(g, e)
    elif isinstance(expected, dict):
        assert isinstance(got, dict)
        assert len(got) == len(expected)  # key order is not compared: jsonb sorts keys
        keys = {k: k for k in got}
        for key, value in expected.items():
            assert_identical(keys[key], key)
            assert_identical(got[key], value)
    elif isinstance(expected, set | frozenset):
        assert got == expected
        assert isinstance(got, set | frozenset)
        assert sorted(map(repr, got)) == sorted(map(repr, expected))
    elif isinstance(expected, datetime | time):
        assert isinstance(got, datetime | time)
        assert (got, got.fold) == (expected, expected.fold)
        assert type(got.tzinfo) is type(expected.tzinfo)
        if isinstance(expected.tzinfo, ZoneInfo):
            assert getattr(got.tzinfo, "key", None) == expected.tzinfo.key
        elif expected.tzinfo is not None:
            assert got.tzinfo is not None
            assert got.tzinfo.tzname(None) == expected.tzinfo.tzname(None)
            assert got.tzinfo.utcoffset(None) == expected.tzinfo.utcoffset(None)
    elif dataclasses.is_dataclass(expected):
        assert_identical(vars(got), vars(expected))
    else:
        assert got == expected


def through_json(args: tuple[object, ...], kwargs: dict[str, object]) -> tuple[Any, Any]:
    return deserialize_arguments(json.loads(dumps_arguments(args, kwargs)))


def through_jsonb(args: tuple[object, ...], kwargs: dict[str, object]) -> tuple[Any, Any]:
    """Mimic PostgreSQL jsonb: numbers become numeric (1e+16 -> 10000000000000000, -0.0 -> 0.0)
    and object keys are reordered."""

    def numeric(text: str) -> Any:
        out = format(Decimal(text), "f")
        return json.loads(out[1:] if out.startswith("-") and Decimal(out) == 0 else out)

    stored = json.loads(dumps_arguments(args, kwargs), parse_float=numeric)
    return deserialize_arguments(json.loads(json.dumps(stored, sort_keys=True)))


VALUES: list[Any] = [
    pytest.param("hello", id="str"),
    pytest.param("", id="empty-str"),
    pytest.param("héllo ✓ 😀", id="unicode"),
    pytest.param("a\x00b", id="str-with-nul"),
    pytest.param("bad \udcff surrogate", id="str-with-lone-surrogate"),
    pytest.param(0, id="zero"),
    pytest.param(-42, id="int"),
    pytest.param(2**63 + 1, id="int-beyond-int64"),
    pytest.param(-(2**200), id="big-negative-int"),
    pytest.param(10**5000 + 7, id="int-beyond-str-limit"),
    pytest.param(1.5, id="float"),
    pytest.param(0.1, id="float-0.1"),
    pytest.param(5e-324, id="float-denormal"),
    pytest.param(1e-7, id="float-small"),
    pytest.param(123456789.123, id="float-fraction"),
    pytest.param(-0.0, id="negative-zero"),
    pytest.param(1e16, id="float-1e16"),
    pytest.param(-1.7976931348623157e308, id="float-max"),
    pytest.param(math.nan, id="nan"),
    pytest.param(math.inf, id="inf"),
    pytest.param(-math.inf, id="-inf"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param(None, id="none"),
    pytest.param([], id="empty-list"),
    pytest.param([1, "a", None, [2.5]], id="list"),
    pytest.param((), id="empty-tuple"),
    pytest.param((1, (2, [3, (4,)])), id="nested-tuple"),
    pytest.param({}, id="empty-dict"),
    pytest.param({"a": 1, "b": {"c": [True]}}, id="dict"),
    pytest.param({1: "one", 2: "two"}, id="dict-int-keys"),
    pytest.param({True: "t", 0: "zero"}, id="dict-bool-and-int-keys"),
    pytest.param({UUID(int=1): "u", (1, "x"): "t", None: 0}, id="dict-other-keys"),
    pytest.param({"__pgjobs__": "datetime", "v": "not a date"}, id="dict-reserved-key"),
    pytest.param({"a\x00": 1}, id="dict-nul-key"),
    pytest.param(set(), id="empty-set"),
    pytest.param({1, "a", (2, 3)}, id="set"),
    pytest.param(frozenset({1.5, b"x"}), id="frozenset"),
    pytest.param(datetime(2024, 5, 17, 13, 45, 1, 123456), id="datetime-naive"),
    pytest.param(datetime(2024, 5, 17, 13, 45, tzinfo=UTC), id="datetime-utc"),
    pytest.param(datetime(2024, 5, 17, 13, 45, tzinfo=NEW_YORK), id="datetime-zoneinfo"),
    pytest.param(datetime(2024, 11, 3, 1, 30, tzinfo=NEW_YORK, fold=1), id="datetime-fold"),
    pytest.param(datetime(2024, 1, 1, tzinfo=IST), id="datetime-offset"),
    pytest.param(datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=1), "CET")), id="named-tz"),
    pytest.param(datetime(1, 1, 1), id="datetime-min"),
    pytest.param(date(2024, 2, 29), id="date"),
    pytest.param(time(23, 59, 59, 999999), id="time"),
    pytest.param(time(8, 30, tzinfo=IST), id="time-offset"),
    pytest.param(time(8, 30, tzinfo=NEW_YORK), id="time-zoneinfo"),
    pytest.param(timedelta(days=-1, seconds=5, microseconds=7), id="timedelta"),
    pytest.param(timedelta(0), id="timedelta-zero"),
    pytest.param(Decimal("1.10"), id="decimal"),
    pytest.param(Decimal("-0E+3"), id="decimal-exponent"),
    pytest.param(Decimal("12345678901234567890.123456789012345678901"), id="decimal-long"),
    pytest.param(Decimal("NaN"), id="decimal-nan"),
    pytest.param(UUID("12345678-1234-5678-1234-567812345678"), id="uuid"),
    pytest.param(b"\x00\xffbinary", id="bytes"),
    pytest.param(b"", id="empty-bytes"),
    pytest.param(Color.RED, id="enum"),
    pytest.param(Color.PAIR, id="enum-tuple-value"),
    pytest.param(Priority.HIGH, id="intenum"),
    pytest.param(Perm.READ | Perm.WRITE, id="flag"),
    pytest.param(Outer.Inner.A, id="nested-enum"),
    pytest.param(Address("Oslo", date(2020, 1, 1)), id="dataclass"),
    pytest.param(
        User("Ann", Address("Oslo", date(2020, 1, 1)), ("a",), datetime(2024, 1, 1, tzinfo=IST)),
        id="nested-dataclass",
    ),
    pytest.param(FakeModel(when=datetime(2024, 1, 1), amount=Decimal("9.99")), id="pydantic-like"),
    pytest.param(Point(1, 2), id="custom-codec"),
    pytest.param({Point(1, 2): [Point(3, 4)]}, id="registered-as-key"),
]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("transport", [through_json, through_jsonb], ids=["json", "jsonb"])
def test_round_trip(value: Any, transport: Any) -> None:
    args, kwargs = transport((value, [value], {"k": (value,)}), {"kw": value})
    assert_identical(args, (value, [value], {"k": (value,)}))
    assert_identical(kwargs, {"kw": value})


def test_round_trip_in_process_without_json() -> None:
    value = {"when": datetime(2024, 1, 1, tzinfo=NEW_YORK), "ids": {1, 2}}
    args, kwargs = deserialize_arguments(serialize_arguments([value], {"x": (1,)}))
    assert_identical(args, (value,))
    assert_identical(kwargs, {"x": (1,)})


def test_nested_structure() -> None:
    value = {
        "users": [User("Bo", Address("Rome", date(1999, 12, 31)))],
        "schedule": {date(2024, 1, 1): [(time(9), timedelta(hours=1))]},
        "meta": {"__pgjobs__": {"__pgjobs__": "tuple"}, "amount": Decimal("0.30")},
    }
    args, kwargs = through_jsonb((value,), {"nested": [[{"a": ({"b": {1, 2}},)}]]})
    assert_identical(args, (value,))
    assert_identical(kwargs, {"nested": [[{"a": ({"b": {1, 2}},)}]]})


def test_plain_arguments_are_stored_as_themselves() -> None:
    assert dumps_arguments((1, "a", 2.5, True, None), {"k": False}) == (
        '{"args":[1,"a",2.5,true,null],"kwargs":{"k":false}}'
    )
    assert serialize_arguments([], {}) == {"args": [], "kwargs": {}}
    assert serialize_arguments([[1], {"a": "b"}], {}) == {"args": [[1], {"a": "b"}], "kwargs": {}}


STORED_TEXT_CASES = [
    (),
    (1,),
    (0, -1, 2**62, 10**30, -(10**30)),
    (1.5, 0.0, -0.0, 1e15, 1e16, 1e-300, float("inf"), float("nan")),
    (True, False, None),
    ("", "a", 'q"uote', "back\\slash", "tab\tnl\n", "\x00nul", "\u2028", "é漢字😀", "\ud800"),
    ([1, [2, "x"]], {"a": 1, "b": [None]}, {1: 2}, (1, 2), {"__pgjobs__": 1}, b"raw"),
]


@pytest.mark.parametrize("args", STORED_TEXT_CASES)
@pytest.mark.parametrize("kwargs", [{}, {"k": 1}, {"k": "é", "z": [1.5]}])
@pytest.mark.parametrize("trace", [None, {"traceparent": "00-abc-def-01"}])
def test_stored_text_is_compact_json_of_the_serialized_form(
    args: tuple[Any, ...], kwargs: dict[str, Any], trace: dict[str, str] | None
) -> None:
    """dumps_arguments (its shortcut for plain positional arguments included) writes exactly
    ``json.dumps`` of serialize_arguments: the text is what unique keys are made of."""
    data = serialize_arguments(args, kwargs)
    if trace is not None:
        data["trace"] = trace
    expected = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    assert dumps_arguments(args, kwargs, trace=trace) == expected
    assert dumps_arguments(list(args), kwargs, trace=trace) == expected


def test_tagged_format() -> None:
    data = serialize_arguments(
        [(1,), datetime(2024, 1, 1, tzinfo=NEW_YORK), Color.RED, Point(1, 2)], {}
    )
    assert data["args"] == [
        {"__pgjobs__": "tuple", "v": [1]},
        {"__pgjobs__": "datetime", "v": "2024-01-01T00:00:00-05:00", "tz": "America/New_York"},
        {"__pgjobs__": "enum", "v": "red", "cls": f"{__name__}:Color"},
        {"__pgjobs__": "object", "v": [1, 2], "type": "tests.Point"},
    ]


def test_reserved_key_is_escaped() -> None:
    user_dict = {"__pgjobs__": "tuple", "v": [1, 2]}
    data = serialize_arguments([user_dict], {"__pgjobs__": "kwarg names are not tagged"})
    assert data["args"] == [{"__pgjobs__": "dict", "v": [["__pgjobs__", "tuple"], ["v", [1, 2]]]}]
    args, kwargs = deserialize_arguments(json.loads(json.dumps(data)))
    assert args == (user_dict,)
    assert type(args[0]["v"]) is list
    assert kwargs == {"__pgjobs__": "kwarg names are not tagged"}


def test_bool_is_not_int() -> None:
    args, kwargs = through_jsonb((True, 1, False, 0, [True, 1]), {"flag": True, "n": 1})
    assert [type(a) for a in args] == [bool, int, bool, int, list]
    assert [type(a) for a in args[4]] == [bool, int]
    assert type(kwargs["flag"]) is bool
    assert type(kwargs["n"]) is int
    (priority,), _ = through_json((Priority.HIGH,), {})
    assert priority is Priority.HIGH


def test_timezones_are_kept() -> None:
    ny = datetime(2024, 7, 4, 12, tzinfo=NEW_YORK)
    india = datetime(2024, 7, 4, 12, tzinfo=IST)
    (got_ny, got_india), _ = through_jsonb((ny, india), {})
    assert got_ny.tzinfo is NEW_YORK  # ZoneInfo caches instances per key
    assert got_ny.utcoffset() == timedelta(hours=-4)
    assert got_india.tzinfo == IST
    assert got_india.utcoffset() == timedelta(hours=5, minutes=30)
    assert (got_ny.hour, got_india.hour) == (12, 12)


def test_registered_dataclass_keeps_init_false_fields() -> None:
    user = User("Ann", Address("Oslo", date(2020, 1, 1)))
    user.slug = "custom"
    (got,), _ = through_json((user,), {})
    assert got.slug == "custom"
    assert got == user


def test_register_type_as_decorator_returns_class() -> None:
    @register_type
    @dataclasses.dataclass
    class Local:
        x: int

    assert Local.__name__ == "Local"
    (got,), _ = through_json((Local(3),), {})
    assert got == Local(3)
    assert type(got) is Local


def test_register_type_rejects_bad_classes() -> None:
    with pytest.raises(TypeError, match="pass encode and decode"):
        register_type(type("Plain", (), {}))
    with pytest.raises(TypeError, match="supported already"):
        register_type(datetime)
    other = type("Other", (), {})
    with pytest.raises(ValueError, match="already registered"):
        register_type(other, name="tests.Point", encode=repr, decode=repr)


def message_of(args: list[object], kwargs: dict[str, object] | None = None) -> str:
    with pytest.raises(SerializationError) as info:
        serialize_arguments(args, kwargs or {}, context="SendEmail.perform_later")
    assert isinstance(info.value, TypeError)
    return str(info.value)


def test_error_names_position_path_type_and_context() -> None:
    message = message_of(["x", "y", [0, 1, 2, {"when": object()}]])
    assert "argument 2 at args[2][3]['when']" in message
    assert "SendEmail.perform_later" in message
    assert "unsupported type object" in message
    assert "Supported: str, int, float" in message
    with pytest.raises(SerializationError, match="dumps_context"):
        dumps_arguments([object()], {}, context="dumps_context")


def test_error_names_keyword_argument() -> None:
    message = message_of([], {"when": Unregistered(1)})
    assert "keyword argument 'when' of SendEmail.perform_later" in message
    assert "tests.test_serialization.Unregistered" in message
    assert "register it with pgjobs.register_type" in message
    message = message_of([1], {"ok": 1, "bad": ({"k": [Unregistered(1)]},)})
    assert "keyword argument 'bad' at kwargs['bad'][0]['k'][0]" in message


def test_error_paths_through_tagged_containers() -> None:
    assert "argument 0 at args[0]<key" in message_of([{object(): 1}])
    assert "args[0][1]" in message_of([{"__pgjobs__": 1, 1: object()}])
    assert "argument 1 at args[1][0]" in message_of([1, (object(),)])
    assert "args[0]['address']" in message_of([User("a", Unregistered(1))])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (OrderedDict(a=1), "subclasses of dict are not converted implicitly"),
        (Pair(1, 2), "subclasses of tuple"),
        (bytearray(b"x"), "unsupported type bytearray"),
        (lambda: None, "unsupported type function"),
        (1 + 2j, "unsupported type complex"),
    ],
)
def test_unsupported_types(value: object, expected: str) -> None:
    assert expected in message_of([value])


def test_unsupported_tzinfo_and_local_enum() -> None:
    class Custom(tzinfo):
        def utcoffset(self, dt: datetime | None) -> timedelta:
            return timedelta(hours=1)

        def dst(self, dt: datetime | None) -> timedelta:
            return timedelta(0)

        def tzname(self, dt: datetime | None) -> str:
            return "Custom"

    message = message_of([datetime(2024, 1, 1, tzinfo=Custom())])
    assert "tzinfo of unsupported type" in message
    assert "zoneinfo.ZoneInfo" in message

    class LocalEnum(enum.Enum):
        A = 1

    assert "defined in a function" in message_of([LocalEnum.A])


def test_failing_encode_function_is_reported() -> None:
    class Broken:
        pass

    def encode(obj: Broken) -> Any:
        raise RuntimeError("boom")

    register_type(Broken, encode=encode, decode=lambda v: Broken())
    with pytest.raises(SerializationError, match="boom") as info:
        serialize_arguments([Broken()], {})
    assert isinstance(info.value.__cause__, RuntimeError)


def test_bad_keyword_names_and_cycles() -> None:
    assert "keyword argument names must be str" in message_of([], {1: "x"})  # type: ignore[dict-item]
    cycle: list[object] = []
    cycle.append(cycle)
    assert "cycle" in message_of([cycle])


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ({"__pgjobs__": "no-such-tag", "v": 1}, "unknown tag 'no-such-tag'"),
        ({"__pgjobs__": 7}, "unknown tag 7"),
        ({"__pgjobs__": "object", "type": "nowhere.Gone", "v": {}}, "no type is registered"),
        ({"__pgjobs__": "enum", "cls": "no_such_module_xyz:E", "v": 1}, "cannot import enum"),
        ({"__pgjobs__": "enum", "cls": f"{__name__}:Missing", "v": 1}, "cannot import enum"),
        ({"__pgjobs__": "enum", "cls": f"{__name__}:Point", "v": 1}, "is not an Enum"),
        ({"__pgjobs__": "enum", "cls": f"{__name__}:Color", "v": "blue"}, "cannot decode"),
        ({"__pgjobs__": "uuid", "v": "not-a-uuid"}, "cannot decode stored uuid"),
        ({"__pgjobs__": "decimal", "v": "1.2.3"}, "cannot decode stored decimal"),
        ({"__pgjobs__": "datetime", "v": "2024", "tz": "Mars/Olympus"}, "cannot decode"),
        ({"__pgjobs__": "set", "v": [[1]]}, "cannot decode stored set"),
        ({"__pgjobs__": "tuple"}, "cannot decode stored tuple"),
    ],
)
def test_deserialization_errors(stored: dict[str, Any], expected: str) -> None:
    with pytest.raises(DeserializationError, match=expected):
        deserialize_arguments({"args": [[stored]], "kwargs": {}})


def test_malformed_top_level() -> None:
    with pytest.raises(DeserializationError, match="malformed"):
        deserialize_arguments({"args": "nope"})
    assert deserialize_arguments({}) == ((), {})
