"""rotor.durations: what users write, and the errors that name the field."""

from __future__ import annotations

import re

import pytest

from rotor.durations import PATTERN, format_duration, parse_duration
from rotor.errors import InvalidSpec


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("15m", 900.0),
        ("24h", 86400.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("7d", 604800.0),
        ("1.5h", 5400.0),
        ("1d2h3m4s", 93784.0),
        (" 30s ", 30.0),
        ("0s", 0.0),
    ],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text, "f") == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "'' is not a duration"),
        ("soon", "'soon' is not a duration"),
        ("10", "'10' has no unit"),
        (" 2.5 ", "' 2.5 ' has no unit"),
        ("10x", "'10x' is not a duration"),
        ("h1", "'h1' is not a duration"),
        ("1h 30m", "'1h 30m' is not a duration"),
        ("-5s", "'-5s' is not a duration"),
        (60, "60 has no unit"),
        (1.5, "1.5 has no unit"),
        (True, "expected a duration string, got bool"),
        (None, "expected a duration string, got NoneType"),
        (["1h"], "expected a duration string, got list"),
    ],
)
def test_errors_name_the_field_and_the_fix(value: object, problem: str) -> None:
    with pytest.raises(InvalidSpec) as e:
        parse_duration(value, "spec.rotation.interval")
    assert e.value.field == "spec.rotation.interval"
    fix = "write a number with a unit, e.g. 90s, 15m, 24h or 1h30m"
    assert str(e.value) == f"spec.rotation.interval: {problem}; {fix}"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5400, "1h30m"),
        (0.25, "250ms"),
        (0, "0ms"),
        (86400, "1d"),
        (90061, "1d1h1m1s"),
        (30, "30s"),
        (1.5, "1s500ms"),
    ],
)
def test_format_reads_back(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text, "f") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["90s", "1h30m", "500ms", "1.5h", "7d"])
def test_pattern_agrees_with_the_parser(text: str) -> None:
    assert re.match(PATTERN, text)


@pytest.mark.parametrize("text", ["", "10", "1h 30m", "soon", "-1s"])
def test_pattern_rejects_what_the_parser_rejects(text: str) -> None:
    assert not re.match(PATTERN, text)
    with pytest.raises(InvalidSpec):
        parse_duration(text, "f")


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--rotate-every", "5"],
        ["demo", "--duration", "60"],
        ["acl", "list", "--cert-max-age", "300"],
    ],
)
def test_a_bare_number_is_refused_by_every_command(argv: list[str]) -> None:
    """Every duration flag reads like a spec's interval: a bare number is refused, naming it."""
    from rotor.settings.controller import ControllerSettings
    from rotorctl.cli import build_parser

    parser = build_parser(ControllerSettings())
    with pytest.raises(SystemExit) as e:
        parser.parse_args(argv)
    assert e.value.code == 2


def test_duration_flags_take_units_and_refuse_too_short(capsys: pytest.CaptureFixture[str]) -> None:
    from rotor.settings.controller import ControllerSettings
    from rotorctl.cli import build_parser

    parser = build_parser(ControllerSettings())
    args = parser.parse_args(["demo", "--rotate-every", "1m", "--duration", "1m30s"])
    assert (args.rotate_every, args.duration) == (60.0, 90.0)
    assert parser.parse_args(["acl", "list", "--cert-max-age", "5m"]).cert_max_age == 300.0
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--rotate-every", "0s"])
    err = capsys.readouterr().err
    assert "--rotate-every" in err
    assert "'0s' is too short; use at least 2s" in err
