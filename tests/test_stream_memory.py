"""Streaming keeps resident memory flat: 10x the images, same RSS (bench/stream_rss.py measures it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_resident_memory_does_not_grow_with_dataset_size(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "stream_rss.py"), "--dir", str(tmp_path),
                          "--sizes", "2000", "20000", "--resolution", "64"],
                         capture_output=True, text=True, timeout=600, check=True)
    small, large = (json.loads(line) for line in out.stdout.strip().splitlines())
    assert (small["seen"], large["seen"]) == (2000, 20000)  # every image streamed once
    grown = large["decoded_in_memory_mb"] - small["decoded_in_memory_mb"]  # 221 MB more pixels
    assert large["rss_peak_mb"] - small["rss_peak_mb"] < 0.1 * grown, (small, large)
    assert large["rss_second_half_peak_mb"] < large["rss_first_half_peak_mb"] + 16, large  # no growth in the epoch
