"""Running a script under Triton's CPU interpreter, in a subprocess: ``TRITON_INTERPRET=1`` must not
leak into other tests (it changes which kernels the chooser may pick)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
has_triton = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not has_triton, reason="triton not installed")


def run_interpreted(script: str, timeout: int = 1200) -> dict:
    """Run ``script`` (it prints ``RESULT`` + JSON) with the interpreter on; returns the JSON."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    cmd = [sys.executable, "-c", textwrap.dedent(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.split("RESULT", 1)[1])
