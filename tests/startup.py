"""What a command loads: segroute's entry point run in an interpreter of its own, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable


def run_fresh(args: list[str], watched: Iterable[str]) -> tuple[int, list[str], str]:
    """Run ``segroute ARGS`` through ``cli.main`` in a fresh interpreter: its exit code, which of the
    ``watched`` modules it loaded (sorted), and its stdout."""
    code = (
        "import json, sys\n"
        "from segroute.cli import main\n"
        f"sys.argv = ['segroute', *{args!r}]\n"
        "code = 0\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    code = int(exit.code or 0)\n"
        f"print(json.dumps([code, sorted(set({tuple(watched)!r}) & set(sys.modules))]), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    exit_code, loaded = json.loads(done.stderr.splitlines()[-1])
    return exit_code, loaded, done.stdout
