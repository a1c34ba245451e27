"""The README's promises: its Quickstart matches CI, and its Python examples run."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(language: str, text: str = README) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _quickstart() -> str:
    return README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]


def test_quickstart_has_exactly_two_commands() -> None:
    commands = [
        line
        for block in _blocks("bash", _quickstart())
        for line in block.splitlines()
        if line.strip()
    ]
    assert len(commands) == 2
    assert "kvsessions demo" in commands[0] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command() -> None:
    test_command = _blocks("bash", _quickstart())[1].strip()
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_command in ci_lines


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_examples_run(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.chdir(tmp_path)  # examples create sessions.db / sessions.lmdb here
    code = _blocks("python")[index]
    # Redis examples name the usual addresses; run them against this run's own servers.
    for usual, fixture in (
        ("redis://127.0.0.1:6379/0", "redis_server"),
        ("redis+cluster://127.0.0.1:7000", "redis_cluster"),
    ):
        if usual in code:
            code = code.replace(usual, request.getfixturevalue(fixture).url)
    assert "127.0.0.1:6379" not in code and "127.0.0.1:7000" not in code
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(code, f"README.md python block {index}", "exec"), namespace)
    assert os.listdir(tmp_path) or "TestMyStore" in namespace or "cluster" in namespace
