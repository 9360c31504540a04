"""The code a learner reads is ruff-clean."""

from __future__ import annotations

import subprocess
import sys


def test_ruff_is_clean(course):
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=course.root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
