"""jq expressions: compiled one by one for their errors, run together, each giving its own result."""

from __future__ import annotations

import json
from typing import Any

import pytest

from segroute.events import parse_event
from segroute.expressions import NOTHING, ExpressionError, Expressions, check_expression, truthy
from segroute.models import Event, Record

EVENT = {"type": "track", "event": "E", "userId": "u", "properties": {"total": 60, "items": [1, 2]}}


def run(event: dict[str, Any], **named: str) -> dict[str, Any]:
    """Each expression's result on the event, read as an NDJSON line (its text goes to jq)."""
    text = json.dumps(event).encode()
    parsed = parse_event(Record("in.jsonl:1", event, len(text), text))
    assert isinstance(parsed, Event)
    return Expressions(named).run(parsed)


def test_each_expression_gives_its_first_output_nothing_or_its_own_error() -> None:
    found = run(
        EVENT,
        when=".properties.total > 50",
        data=".properties",
        many=".properties.items[]",
        none="empty",
        bad=".properties.total.x",
    )
    assert found["when"] is True
    assert found["data"] == {"total": 60, "items": [1, 2]}
    assert found["many"] == 1
    assert found["none"] is NOTHING
    assert isinstance(found["bad"], ExpressionError)
    assert str(found["bad"]) == 'Cannot index number with string ("x")'


def test_the_event_as_a_dict_gives_what_its_text_gives() -> None:
    parsed = parse_event(Record("in.json:1[0]", EVENT, 100))
    assert isinstance(parsed, Event) and parsed.text is None
    named = {"when": ".properties.total > 50", "data": ".properties"}
    assert Expressions(named).run(parsed) == run(EVENT, **named)


def test_comments_definitions_and_error_values_stay_inside_their_expression() -> None:
    found = run(
        EVENT,
        commented=".properties.total # the order's total",
        defined="def twice: . * 2; .properties.total | twice",
        thrown='error({"code": 7})',
        message='error("no  such\\nthing")',
    )
    assert found["commented"] == 60
    assert found["defined"] == 120
    assert str(found["thrown"]) == '{"code": 7}'
    assert str(found["message"]) == "no such thing"  # one line


def test_what_try_cannot_catch_fails_every_expression_of_the_program() -> None:
    found = run(EVENT, when="true", stop='"bye" | halt_error')
    assert set(found) == {"when", "stop"}
    assert [str(value) for value in found.values()] == ["the program halted"] * 2


def test_jq_truthiness() -> None:
    held: list[Any] = [True, 0, "", [], {}, "false"]
    assert all(truthy(value) for value in held)
    assert not any(truthy(value) for value in (False, None, NOTHING))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (".a |", "not a valid jq expression: syntax error, unexpected end of file (line 1, column 4)"),
        ("nosuch(1)", "not a valid jq expression: nosuch/1 is not defined (line 1, column 1)"),
    ],
)
def test_an_expression_jq_does_not_compile_is_named_in_one_line(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        check_expression(text)
    assert str(info.value) == message
    with pytest.raises(ValueError):
        Expressions({"when": "true", "data": text})


def test_a_comment_a_last_backslash_continues_does_not_swallow_the_next_expression() -> None:
    # jq continues a comment onto the next line after a backslash: the program puts a blank line there.
    found = run(EVENT, when=".properties.total > 50 # big orders \\", data=".properties")
    assert found == {"when": True, "data": {"total": 60, "items": [1, 2]}}
