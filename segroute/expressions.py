"""jq expressions, as links use them: checked one by one, run together on each event.

jq is the JSON language users of this CLI already pipe through; the ``jq`` package on PyPI binds
the real one, so an expression means here what it means on the command line. It loads (13 ms) only
when a config holds an expression.

Parsing the event is most of what running a jq program costs (about 45 µs for a 1 KB event, where
evaluating ``.properties.total > 50`` is a few): a link's expressions run as one program, so the
event is parsed once per link, not once per expression (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any, Final, Protocol, cast

from segroute.models import Event

__all__ = [
    "NOTHING",
    "ExpressionError",
    "Expressions",
    "check_expression",
    "truthy",
]

NOTHING: Final = object()
"""What an expression that outputs nothing (``empty``, a failed ``select``) gives."""


class ExpressionError(Exception):
    """An expression failed on an event: jq's own message (`error`, indexing a number, ...)."""


class _Outputs(Protocol):
    def first(self) -> Any: ...


class _Program(Protocol):
    def input_value(self, value: Any) -> _Outputs: ...
    def input_text(self, text: str) -> _Outputs: ...


def check_expression(text: str) -> str:
    """The expression, if jq compiles it; ValueError, in jq's words, if not."""
    _compile(text)
    return text


class Expressions:
    """Named jq expressions, run together on an event: each gives its first output, NOTHING, or an
    `ExpressionError`, whatever the others give."""

    def __init__(self, named: Mapping[str, str]) -> None:
        self._names = tuple(named)
        for text in named.values():
            check_expression(text)  # alone, so that a syntax error names the expression
        # {"when": (try [first(WHEN\n\n)] catch {error: .}), ...}: an output in an array, none as an
        # empty one, an error as an object. The blank line ends a comment the expression ends with,
        # even one that a last backslash continues onto the next line.
        parts = [
            f"{json.dumps(name)}: (try [first({text}\n\n)] catch {{error: .}})"
            for name, text in named.items()
        ]
        self._program = _compile("{" + ", ".join(parts) + "}")
        try:
            probe = self._program.input_value(None).first()
        except (ValueError, StopIteration):  # it halts: nothing to tell from
            return
        if not isinstance(probe, dict) or set(probe) != set(self._names):  # an expression ate the rest
            raise ValueError(f"these expressions do not run together as one jq program: {dict(named)}")

    def run(self, event: Event) -> dict[str, Any]:
        """Each expression's first output on the event, NOTHING, or an `ExpressionError`.

        The event's text as read, when there is one, goes to jq as it is: jq parses it faster than
        the dict can be serialized for it.
        """
        try:
            if event.text is not None:
                found = self._program.input_text(event.text.decode()).first()
            else:
                found = self._program.input_value(event.data).first()
        except ValueError as exc:  # what try cannot catch
            return dict.fromkeys(self._names, ExpressionError(_one_line(str(exc))))
        except StopIteration:  # halt, or halt_error: the program ends without an output
            return dict.fromkeys(self._names, ExpressionError("the program halted"))
        return {name: _result(value) for name, value in found.items()}


def _result(value: Any) -> Any:
    if type(value) is list:
        return value[0] if value else NOTHING
    error = value["error"]
    return ExpressionError(_one_line(error if isinstance(error, str) else json.dumps(error)))


def truthy(value: Any) -> bool:
    """jq's truthiness: everything but false and null (and no output at all)."""
    return value is not NOTHING and value is not None and value is not False


@functools.cache
def _compile(text: str) -> _Program:
    """The program for an expression, compiled once per process (config checks and routers share it)."""
    import jq  # type: ignore[import-not-found]  # no type hints; _Program is the part used

    try:
        return cast(_Program, jq.compile(text))
    except ValueError as exc:
        raise ValueError(_compile_error(str(exc))) from None


def _compile_error(message: str) -> str:
    """jq's compile error in one line: ``jq: error: syntax error, unexpected end of file at
    <top-level>, line 1, column 4:`` and the caret lines become ``syntax error, unexpected end of
    file (line 1, column 4)``."""
    first = message.removeprefix("jq: error: ").split("\n", 1)[0].rstrip(":")
    what, _, where = first.partition(" at <top-level>, ")
    return f"not a valid jq expression: {what}" + (f" ({where})" if where else "")


def _one_line(text: str) -> str:
    return " ".join(text.split())
