"""jq expressions, as links use them: compiled once, run on each event through the jq library.

jq is the JSON language users of this CLI already pipe through; the ``jq`` package on PyPI binds
the real one, so an expression means here what it means on the command line. It loads (13 ms) only
when a config holds an expression.
"""

from __future__ import annotations

import functools
from typing import Any, Final, Protocol, cast

from segroute.models import Event

__all__ = [
    "NOTHING",
    "Expression",
    "ExpressionError",
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


class Expression:
    """A compiled jq expression; ValueError, with jq's own words, for one that does not compile."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._program = _compile(text)

    def first(self, event: Event) -> Any:
        """The expression's first output on the event, or NOTHING; `ExpressionError` when jq fails.

        The event's text as read, when there is one, goes to jq as it is: jq parses it faster than
        the dict can be serialized for it.
        """
        try:
            if event.text is not None:
                outputs = self._program.input_text(event.text.decode())
            else:
                outputs = self._program.input_value(event.data)
            return outputs.first()
        except StopIteration:
            return NOTHING
        except ValueError as exc:
            raise ExpressionError(_one_line(str(exc))) from None


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
