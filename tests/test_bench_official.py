"""bench/official_equivalence.py without the official code: one line that says how to get it, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("extra", [[], ["--official", "/no/such/checkout"]])
def test_without_the_official_code_it_says_how_to_get_it(extra):
    res = subprocess.run([sys.executable, "bench/official_equivalence.py", *extra], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "git clone https://github.com/mit-han-lab/tinyml" in lines[0]
    assert "--official" in lines[0]
