"""The quick-start example trains, predicts, saves and reloads (issue 19, item 10)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_trains_and_predicts():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "test MAE" in out and "predicted" in out and "identical predictions" in out
    r2 = float(out.split("R² ")[1].split()[0])
    assert r2 > 0.5, out
