#!/usr/bin/env python3
"""Mutation testing by hand: change a module one small way at a time, run its tests, list survivors.

A survivor is a change no test noticed: a behaviour nothing pins. Run from the repository's root,
in its virtualenv; not part of CI (each mutant is a pytest run):

    python scripts/mutate.py --module segroute/transform.py --tests "tests/test_transform.py" --limit 30

Each mutant is written over the module in place and the original put back afterwards, also on
Ctrl-C or SIGTERM. Mutants are whole modules written again by `ast.unparse` (comments go, meaning
stays); lines are the original's.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODULES = [
    f"segroute/{name}.py"
    for name in ("transform", "routing", "events", "pipeline", "selection", "retry", "delivery", "ledger")
]
COMPARISONS: dict[type[ast.cmpop], tuple[str, type[ast.cmpop]]] = {
    ast.Lt: ("<", ast.LtE),
    ast.LtE: ("<=", ast.Lt),
    ast.Gt: (">", ast.GtE),
    ast.GtE: (">=", ast.Gt),
    ast.Eq: ("==", ast.NotEq),
    ast.NotEq: ("!=", ast.Eq),
    ast.Is: ("is", ast.IsNot),
    ast.IsNot: ("is not", ast.Is),
    ast.In: ("in", ast.NotIn),
    ast.NotIn: ("not in", ast.In),
}
"""Each comparison, its symbol, and what it becomes: the boundary moved, or the test negated."""
MUTANT_STRING = "<mutant>"
CLEAN_TIMEOUT = 600.0
"""Seconds the tests may take on the module as it is, which sets the timeout of each mutant."""

Mutate = Callable[[ast.AST], None]
"""Changes, in place, the node at the mutant's index in a fresh copy of the module's tree."""


@dataclass(frozen=True)
class Mutant:
    """One small change to a module."""

    path: Path
    index: int
    """The node's position in `nodes` order."""
    line: int
    change: str
    mutate: Mutate


def nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node worth mutating, in a fixed order: docstrings and annotations left out."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        children: list[ast.AST] = []
        body = getattr(node, "body", None)
        for field, value in ast.iter_fields(node):
            if field in ("annotation", "returns"):
                continue
            items = value if isinstance(value, list) else [value]
            for index, item in enumerate(items):
                if not isinstance(item, ast.AST):
                    continue
                if index == 0 and items is body and _is_docstring(item):
                    continue
                children.append(item)
        stack.extend(reversed(children))


def _is_docstring(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _swap_comparison(position: int, new: type[ast.cmpop]) -> Mutate:
    def mutate(node: ast.AST) -> None:
        assert isinstance(node, ast.Compare)
        node.ops[position] = new()

    return mutate


def _swap_and_or(node: ast.AST) -> None:
    assert isinstance(node, ast.BoolOp)
    node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()


def _set_constant(value: str | int | bool) -> Mutate:
    def mutate(node: ast.AST) -> None:
        assert isinstance(node, ast.Constant)
        node.value = value

    return mutate


def _drop_not(node: ast.AST) -> None:
    # `not x` becomes `not not x`, which is x as a truth value: the `not` undone, in place.
    assert isinstance(node, ast.UnaryOp)
    node.operand = ast.UnaryOp(op=ast.Not(), operand=node.operand)


def mutants(path: Path) -> list[Mutant]:
    """Every mutant of a module, in source order."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    returned = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Return)}
    found: list[Mutant] = []

    def add(index: int, node: ast.AST, change: str, mutate: Mutate) -> None:
        found.append(Mutant(path, index, getattr(node, "lineno", 0), change, mutate))

    for index, node in enumerate(nodes(tree)):
        if isinstance(node, ast.Compare):
            for position, op in enumerate(node.ops):
                symbol, new = COMPARISONS[type(op)]
                change = f"{symbol} -> {COMPARISONS[new][0]}"
                add(index, node, change, _swap_comparison(position, new))
        elif isinstance(node, ast.BoolOp):
            add(index, node, "and -> or" if isinstance(node.op, ast.And) else "or -> and", _swap_and_or)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            add(index, node, "not removed", _drop_not)
        elif isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool):
                add(index, node, f"{value} -> {not value}", _set_constant(not value))
            elif isinstance(value, int):
                add(index, node, f"{value} -> {value + 1}", _set_constant(value + 1))
                add(index, node, f"{value} -> {value - 1}", _set_constant(value - 1))
            elif isinstance(value, str) and id(node) in returned:
                add(index, node, f"return {value!r} -> {MUTANT_STRING!r}", _set_constant(MUTANT_STRING))
    return found


def mutated_source(tree: ast.Module, mutant: Mutant) -> str:
    """The module's text with the mutant's change, from a copy of its tree."""
    changed = copy.deepcopy(tree)
    node = next(node for index, node in enumerate(nodes(changed)) if index == mutant.index)
    mutant.mutate(node)
    return ast.unparse(changed) + "\n"


@dataclass
class Runner:
    """Runs the chosen tests in a child process of its own, its caches in a scratch folder."""

    tests: list[str]
    timeout: float
    scratch: str

    def run(self) -> tuple[str, float]:
        """``killed``, ``survived`` or ``timeout``, and the seconds it took."""
        # Hypothesis seeded, so each mutant meets the same examples, and its database in the
        # scratch folder: failures a mutant caused must not be replayed by later runs.
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-x",
            "-q",
            "-p",
            "no:cacheprovider",
            "--hypothesis-seed=0",
        ]
        # A bytecode cache of its own: a mutant of the same size written in the same second as the
        # one before could otherwise run from the stale .pyc.
        env = {
            **os.environ,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPYCACHEPREFIX": os.path.join(self.scratch, "pycache"),
            "HYPOTHESIS_STORAGE_DIRECTORY": os.path.join(self.scratch, "hypothesis"),
        }
        env.pop("PYTHONUNBUFFERED", None)
        start = time.monotonic()
        child = subprocess.Popen(
            [*command, *self.tests],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own group: a timeout ends the tests' own children too
        )
        try:
            code = child.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill(child)
            return "timeout", time.monotonic() - start
        except BaseException:
            _kill(child)
            raise
        return ("survived" if code == 0 else "killed"), time.monotonic() - start


def _kill(child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Mutate, test, and print the survivors; exit 1 if any mutant survived."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--module",
        action="append",
        help=f"a module to mutate, repeatable [default: {' '.join(DEFAULT_MODULES)}]",
    )
    parser.add_argument(
        "--tests",
        help="pytest arguments as one string [default: tests/test_<module>.py of each module that has one]",
    )
    parser.add_argument("--limit", type=int, help="test at most this many mutants")
    parser.add_argument(
        "--sample", type=int, metavar="SEED", help="pick the mutants at random, from this seed"
    )
    parser.add_argument(
        "--timeout", type=float, help="seconds per mutant [default: 5 x the clean run, >= 30]"
    )
    args = parser.parse_args(argv)

    paths = [ROOT / module for module in (args.module or DEFAULT_MODULES)]
    if args.tests is not None:
        tests = shlex.split(args.tests)
    else:
        tests = [
            f"tests/test_{path.stem}.py"
            for path in paths
            if (ROOT / "tests" / f"test_{path.stem}.py").exists()
        ]
    every = [mutant for path in paths for mutant in mutants(path)]
    chosen = list(every)
    if args.sample is not None:
        random.Random(args.sample).shuffle(chosen)
    chosen = chosen[: args.limit] if args.limit is not None else chosen
    chosen.sort(key=lambda mutant: (str(mutant.path), mutant.line, mutant.index))

    signal.signal(signal.SIGTERM, _stop)
    with tempfile.TemporaryDirectory(prefix="segroute-mutate-") as scratch:
        runner = Runner(tests, CLEAN_TIMEOUT, scratch)
        outcome, took = runner.run()
        if outcome != "survived":
            print(f"the tests fail without any mutant ({outcome}): {' '.join(tests)}", file=sys.stderr)
            return 2
        runner.timeout = args.timeout or max(30.0, 5 * took)
        print(f"{len(chosen)} of {len(every)} mutants; tests: {' '.join(tests)} ({took:.1f} s clean)")
        results = _run_all(chosen, runner)
    counts = {
        kind: sum(1 for _, result in results if result == kind) for kind in ("killed", "timeout", "survived")
    }
    print(
        f"\n{len(results)} mutants: {counts['killed']} killed, {counts['timeout']} timed out, "
        f"{counts['survived']} survived"
    )
    survivors = [mutant for mutant, result in results if result == "survived"]
    if survivors:
        print("survivors:")
        for mutant in survivors:
            print(f"  {mutant.path.relative_to(ROOT)}:{mutant.line}: {mutant.change}")
    return 1 if survivors else 0


def _run_all(chosen: list[Mutant], runner: Runner) -> list[tuple[Mutant, str]]:
    results: list[tuple[Mutant, str]] = []
    trees: dict[Path, ast.Module] = {}
    for number, mutant in enumerate(chosen, 1):
        path = mutant.path
        if path not in trees:
            trees[path] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        text = mutated_source(trees[path], mutant)
        original = path.read_bytes()
        stat = path.stat()
        try:
            path.write_text(text, encoding="utf-8")
            outcome, took = runner.run()
        finally:
            _restore(path, original, stat)
        results.append((mutant, outcome))
        where = f"{path.relative_to(ROOT)}:{mutant.line}"
        print(f"[{number}/{len(chosen)}] {where}: {mutant.change}: {outcome} ({took:.1f} s)", flush=True)
    return results


def _restore(path: Path, original: bytes, stat: os.stat_result) -> None:
    """Put the module back as it was, its modification time too, with no signal to cut it short."""
    stops = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nstopped; every module is as it was", file=sys.stderr)
        sys.exit(130)
