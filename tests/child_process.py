"""Run a Python child process with this checkout importable, and read what it reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_json(
    args: list[str], env: Mapping[str, str | None] | None = None, cwd: Path | None = None
) -> dict[str, Any]:
    """``python *args`` (this checkout first on ``PYTHONPATH``; ``env`` changes ours, a
    ``None`` value removes the variable); the JSON object on its last line of output.  A
    failing child fails the test with its stderr."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    child_env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **(env or {})}
    done = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env={name: value for name, value in child_env.items() if value is not None},
        cwd=cwd,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
