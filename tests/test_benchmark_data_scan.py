"""benchmarks/data_scan.py keeps running: its ``--quick`` path scans 12 entries with the pool and 6 serially."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(150)
def test_quick_scan_benchmark():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "data_scan.py"), "--quick"],
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=140)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"serial scan \(baseline\)\s+6 slides in .* slides/s", proc.stdout), proc.stdout
    assert re.search(r"process pool, 2 workers\s+12 slides in .* slides/s", proc.stdout), proc.stdout
    assert re.search(r"speed-up of the pool over the serial scan: \d+\.\d\dx", proc.stdout)
