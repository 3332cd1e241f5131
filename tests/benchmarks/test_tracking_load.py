"""Smoke test of benchmarks/tracking_load.py: its smallest setting, both backends, nothing lost."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# two real MLflow servers and a PostgreSQL start: 34 s measured on 2 cores at load average 5 (63 s at 9)
def test_tracking_load_smallest_setting(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tracking_load.py"), "--clients", "1",
                           "--seconds", "1", "--json", str(out)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [(r["backend"], r["clients"]) for r in rows] == [("sqlite", 1), ("postgres", 1)]
    for row in rows:
        assert row["lost"] == 0 and row["clients_crashed"] == 0
        assert row["points"] > 0 and row["points"] % 4 == 0 and row["points_per_s"] > 0
        assert 0 < row["p50_ms"] <= row["p99_ms"]
    assert "| backend | clients | metric points/s |" in done.stdout
    urls = re.findall(r"(?:sqlite|postgres) (http://127\.0\.0\.1:\d+)", done.stdout)
    assert len(urls) == 2
    for url in urls:  # both servers (and PostgreSQL) were stopped
        with pytest.raises(OSError):
            urllib.request.urlopen(url + "/health", timeout=5)
