#!/usr/bin/env python3
"""The module map of segroute, its import graph, and the import cycles in it.

    python scripts/modules.py                                   # map, imports, cycles
    python scripts/modules.py --max-lines 600 --allow cli=950   # and modules that grew too long

Prints Markdown on stdout: every module of segroute/ with its line count and the first line of its
docstring; each module's direct imports of other segroute modules, read from the AST and split by
when they run (at import, inside a function, or only under ``if TYPE_CHECKING:``, which never runs);
then the cycles among the imports that run (all but the TYPE_CHECKING ones), found as strongly
connected components. A module imported in more than one way is listed once, under the way that runs
first (at import, then in a function, then TYPE_CHECKING).

Exit status: 0 when there is no cycle (and, with --max-lines, no module over its limit), 1 when there
is, 2 for a bad command line or a module that cannot be parsed. Standard library only.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

PACKAGE = "segroute"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE
INIT = "__init__"


class Kind(IntEnum):
    """When an import runs; lower values run earlier, so the lowest kind of an edge is the one shown."""

    IMPORT = 0
    FUNCTION = 1
    TYPE_CHECKING = 2


KIND_TITLES = {
    Kind.IMPORT: "at import",
    Kind.FUNCTION: "in functions",
    Kind.TYPE_CHECKING: "TYPE_CHECKING only",
}


@dataclass
class Module:
    """One module of the package: its name relative to the package, its file, and what it imports."""

    name: str
    path: str
    """The file, as shown: relative to the folder that holds the package."""
    lines: int
    summary: str
    is_package: bool
    imports: dict[str, tuple[Kind, int]] = field(default_factory=dict)
    """Imported module -> (the earliest-running kind, the line of the first import of that kind)."""

    def add_import(self, target: str, kind: Kind, line: int) -> None:
        """Records an import, keeping the kind that runs first (and its line) when there are several."""
        if target == self.name:
            return  # a module importing itself (or the package from __init__) finds itself in sys.modules
        known = self.imports.get(target)
        if known is None or (kind, line) < known:
            self.imports[target] = (kind, line)

    def runtime_imports(self) -> list[str]:
        """The modules this one imports in code that runs: everything but TYPE_CHECKING blocks."""
        return sorted(name for name, (kind, _) in self.imports.items() if kind is not Kind.TYPE_CHECKING)


def module_name(path: Path, package_dir: Path) -> tuple[str, bool]:
    """A file's module name relative to the package (``cli``, ``sub.x``, ``__init__``), and whether it
    is a package's ``__init__``."""
    parts = list(path.relative_to(package_dir).with_suffix("").parts)
    if parts[-1] == INIT:
        return (".".join(parts[:-1]) or INIT), True
    return ".".join(parts), False


def is_type_checking(test: ast.expr) -> bool:
    """Whether an ``if`` tests ``TYPE_CHECKING`` or ``typing.TYPE_CHECKING`` (under any module alias)."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


class ImportCollector(ast.NodeVisitor):
    """Walks one module's AST and records each import of a package module with the kind it is."""

    def __init__(self, module: Module, known: set[str]) -> None:
        self.module = module
        self.known = known
        self.in_function = False
        self.in_type_checking = False

    def kind(self) -> Kind:
        """The kind of an import met at the current point of the walk."""
        if self.in_type_checking:
            return Kind.TYPE_CHECKING
        return Kind.FUNCTION if self.in_function else Kind.IMPORT

    def resolve(self, dotted: Sequence[str]) -> str | None:
        """The module a dotted path inside the package lands on: the longest prefix that is a module,
        or the package's ``__init__`` for the package itself (or a name it defines)."""
        for end in range(len(dotted), 0, -1):
            name = ".".join(dotted[:end])
            if name in self.known:
                return name
        return INIT if INIT in self.known else None

    def record(self, dotted: Sequence[str], line: int) -> None:
        """Records an import of ``dotted`` (relative to the package) if it lands on a package module."""
        target = self.resolve(dotted)
        if target is not None:
            self.module.add_import(target, self.kind(), line)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] == PACKAGE:
                self.record(parts[1:], node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self.base_of(node)
        if base is None:
            return
        for alias in node.names:
            # `from segroute import cli` imports the module cli; `from segroute.cli import main` imports
            # cli; `from segroute import __version__` runs the package's __init__.
            self.record(base if alias.name == "*" else [*base, alias.name], node.lineno)

    def base_of(self, node: ast.ImportFrom) -> list[str] | None:
        """The package-relative path a ``from ... import`` reads from, or None when it is outside."""
        written = node.module.split(".") if node.module else []
        if node.level == 0:
            return written[1:] if written[0] == PACKAGE else None
        here = [] if self.module.name == INIT else self.module.name.split(".")
        package = here if self.module.is_package else here[:-1]
        up = node.level - 1
        if up > len(package):
            return None  # climbs out of segroute
        return package[: len(package) - up] + written

    def visit_If(self, node: ast.If) -> None:
        if not is_type_checking(node.test):
            self.generic_visit(node)
            return
        outer = self.in_type_checking
        self.in_type_checking = True
        for statement in node.body:
            self.visit(statement)
        self.in_type_checking = outer
        for statement in node.orelse:  # the else of `if TYPE_CHECKING:` is what runs
            self.visit(statement)

    def visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        outer = self.in_function
        self.in_function = True
        self.generic_visit(node)
        self.in_function = outer

    visit_FunctionDef = visit_function
    visit_AsyncFunctionDef = visit_function
    visit_Lambda = visit_function


def load_modules(package_dir: Path) -> dict[str, Module]:
    """Every module of the package by name, with its imports of the others."""
    files = sorted(p for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts)
    modules: dict[str, Module] = {}
    trees: dict[str, ast.Module] = {}
    for path in files:
        name, is_package = module_name(path, package_dir)
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        docstring = ast.get_docstring(tree) or ""
        summary = docstring.strip().splitlines()[0].strip() if docstring.strip() else ""
        shown = str(path.relative_to(package_dir.parent))
        modules[name] = Module(name, shown, len(source.splitlines()), summary, is_package)
        trees[name] = tree
    known = set(modules)
    for name, tree in trees.items():
        ImportCollector(modules[name], known).visit(tree)
    return modules


def strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of a graph, each sorted, in the order Tarjan ends them."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, []):
            if successor not in index:
                visit(successor)
                lowlink[node] = min(lowlink[node], lowlink[successor])
            elif successor in on_stack:
                lowlink[node] = min(lowlink[node], index[successor])
        if lowlink[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def shortest_cycle(graph: dict[str, list[str]], members: list[str]) -> list[str]:
    """One shortest cycle through the first member of a strongly connected component, as a path that
    starts and ends there (breadth first, inside the component)."""
    start, inside = members[0], set(members)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for successor in graph.get(node, []):
            if successor == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if successor in inside and successor not in came_from:
                came_from[successor] = node
                queue.append(successor)
    raise AssertionError(f"no cycle through {start} in {members}")


def cell(text: str) -> str:
    """Text made safe for a Markdown table cell."""
    return text.replace("|", "\\|")


def module_map(modules: dict[str, Module]) -> Iterator[str]:
    """The module map as Markdown lines."""
    yield "## Modules"
    yield ""
    yield "| module | lines | docstring |"
    yield "|---|---:|---|"
    for name in sorted(modules):
        module = modules[name]
        yield f"| `{name}` | {module.lines} | {cell(module.summary) or '(none)'} |"
    yield ""
    yield f"{len(modules)} modules, {sum(m.lines for m in modules.values())} lines."


def import_table(modules: dict[str, Module]) -> Iterator[str]:
    """Each module's direct imports of the others as Markdown lines, a column for each kind."""
    yield "## Imports"
    yield ""
    yield "| module | " + " | ".join(KIND_TITLES[kind] for kind in Kind) + " |"
    yield "|---|" + "---|" * len(Kind)
    for name in sorted(modules):
        imports = modules[name].imports
        columns = [", ".join(sorted(t for t, (k, _) in imports.items() if k is kind)) for kind in Kind]
        yield f"| `{name}` | " + " | ".join(column or "-" for column in columns) + " |"


def cycle_lines(modules: dict[str, Module], cycles: list[list[str]]) -> Iterator[str]:
    """The import cycles as Markdown lines: each component's members and one cycle through it, with
    where each of its imports is written."""
    yield "## Import cycles (imports that run)"
    yield ""
    if not cycles:
        yield "None."
        return
    graph = {name: module.runtime_imports() for name, module in modules.items()}
    for members in cycles:
        path = shortest_cycle(graph, members)
        steps = []
        for source, target in zip(path, path[1:], strict=False):
            kind, line = modules[source].imports[target]
            steps.append(f"{source} -> {target} ({KIND_TITLES[kind]}, {modules[source].path}:{line})")
        yield f"- {len(members)} modules: {', '.join(members)}"
        yield f"  - e.g. {' -> '.join(path)}:"
        for step in steps:
            yield f"    - {step}"


def over_limit(modules: dict[str, Module], max_lines: int, allowed: dict[str, int]) -> list[str]:
    """The modules longer than their limit, each as ``name (lines > limit)``."""
    found = []
    for name in sorted(modules):
        limit = allowed.get(name, max_lines)
        if modules[name].lines > limit:
            found.append(f"{name} ({modules[name].lines} > {limit})")
    return found


def parse_allow(text: str) -> tuple[str, int]:
    """An --allow value, ``NAME=N``."""
    name, sep, number = text.partition("=")
    if not sep or not name or not number.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=N, as in cli=750, not {text!r}")
    return name, int(number)


def main(argv: Sequence[str] | None = None, package_dir: Path = PACKAGE_DIR) -> int:
    """Prints the map, the imports and the cycles; returns the exit status."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-lines", type=int, metavar="N", help="fail on modules longer than N lines")
    parser.add_argument(
        "--allow",
        type=parse_allow,
        action="append",
        default=[],
        metavar="NAME=N",
        help="let module NAME have up to N lines (with --max-lines; may be repeated)",
    )
    args = parser.parse_args(argv)
    allowed: dict[str, int] = dict(args.allow)
    if allowed and args.max_lines is None:
        parser.error("--allow needs --max-lines")

    try:
        modules = load_modules(package_dir)
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        print(f"error: cannot read the package: {exc}", file=sys.stderr)
        return 2
    unknown = sorted(set(allowed) - set(modules))
    if unknown:
        parser.error(f"--allow names no module of {PACKAGE}: {', '.join(unknown)}")

    graph = {name: module.runtime_imports() for name, module in modules.items()}
    cycles = [members for members in strongly_connected(graph) if len(members) > 1]
    cycles.sort()

    print(f"# {PACKAGE}: modules and imports")
    print()
    for part in (module_map(modules), import_table(modules), cycle_lines(modules, cycles)):
        for line in part:
            print(line)
        print()

    failed = bool(cycles)
    if args.max_lines is not None:
        print(f"## Modules over {args.max_lines} lines" + (" (or their --allow)" if allowed else ""))
        print()
        long_ones = over_limit(modules, args.max_lines, allowed)
        for entry in long_ones:
            print(f"- {entry}")
        if not long_ones:
            print("None.")
        print()
        failed = failed or bool(long_ones)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `| head` closed stdout: stop quietly, as other command-line tools do
        sys.stdout = open(os.devnull, "w")  # so the flush at exit does not fail again
        sys.exit(1)
