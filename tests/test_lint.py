"""`make lint` in the suite: the tree passes `ruff check` and `ruff format --check` with the repo's
[tool.ruff] config, run by the ruff installed beside this Python (the `dev` extra pins it)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ruff") is None,
    reason="ruff is not installed in this Python (pip install -e '.[dev]' installs the pinned one)",
)

CHECK = ["check", "--output-format", "concise", "--no-cache"]
FORMAT = ["format", "--check", "--output-format", "concise", "--no-cache"]


def ruff(args: list[str], cwd: Path, *paths: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--config", str(REPO / "pyproject.toml"), *paths],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def offending_files(res: subprocess.CompletedProcess) -> list[str]:
    """The files ruff names in its concise complaints, ``path:line:col: CODE message`` (check and format)."""
    return sorted(set(re.findall(r"^(.+?):\d+:\d+: ", res.stdout, re.M)))


def lint_failure(what: str, res: subprocess.CompletedProcess) -> str:
    files = offending_files(res)
    if not files:  # ruff itself failed (a config error, a file it cannot parse): show why
        return f"{what} failed (exit {res.returncode}):\n{res.stdout[-3000:]}{res.stderr[-3000:]}"
    return (
        f"{what}: {len(files)} file(s) to fix (`make lint` lists them; `make format` applies ruff's safe fixes "
        "and formatting, long lines are split by hand):\n  " + "\n  ".join(files) + f"\n{res.stdout[-3000:]}"
    )


@pytest.mark.parametrize("what, args", [("ruff check", CHECK), ("ruff format --check", FORMAT)])
def test_the_tree_is_clean_under_ruff(what, args):
    res = ruff(args, REPO, ".")
    assert res.returncode == 0, lint_failure(what, res)


@pytest.mark.parametrize("what, args", [("ruff check", CHECK), ("ruff format --check", FORMAT)])
def test_a_failure_names_the_offending_file(tmp_path, what, args):
    """What the tree test reports on a failure: a line over 120 characters and a badly formatted file
    are both caught, under the repo's config, and named."""
    (tmp_path / "ok.py").write_text('"""Fine."""\n\nX = 1\n')
    (tmp_path / "bad.py").write_text(f'"""Too long."""\n\nX = {{"a":1}}\nY = "{"y" * 130}"\n')
    res = ruff(args, tmp_path, ".")
    assert res.returncode == 1, res.stdout + res.stderr
    assert offending_files(res) == ["bad.py"], res.stdout
    assert "bad.py" in lint_failure(what, res) and "ok.py" not in lint_failure(what, res)
