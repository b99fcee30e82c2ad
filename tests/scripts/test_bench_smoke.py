"""scripts/bench_sampler.py still runs and prints its tables (tiniest settings, no devinterp, no memory workers)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_sampler.py"


def _tables(text: str) -> list[list[list[str]]]:
    """Markdown tables of ``text`` as lists of rows of cells (header first, the |---| line dropped)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-:") for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def test_bench_sampler_smoke(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    cmd = [sys.executable, str(SCRIPT), "--models", "mlp", "--steps", "3", "--repeats", "1", "--no-devinterp",
           "--no-memory", "--vmap-chains", "2", "--llc-chains", "2", "--llc-draws", "4", "--llc-repeats", "1",
           "--markdown", "--json", str(tmp_path / "bench.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = _tables(proc.stdout)
    assert len(tables) == 3, proc.stdout  # step times, whole-LLC times, λ̂ (no memory table with --no-memory)
    steps, llc_time, llc_est = tables

    assert steps[0] == ["model", "params", "bare ms/step", "floor ms/step", "ours ms/step", "ours/bare", "ours/floor",
                        "ours no-MALA ms/step", "ours/no-MALA", "vmap ms/chain-step", "vmap/ours", "vmap/floor",
                        "ours ms/chain"]
    assert [row[0] for row in steps[1:]] == ["mlp"]
    row = dict(zip(steps[0], steps[1]))
    assert row["params"] == "1,377"
    for col in ("bare ms/step", "floor ms/step", "ours ms/step", "ours no-MALA ms/step", "vmap ms/chain-step"):
        assert float(row[col]) > 0, (col, row)
    assert row["ours/floor"].endswith("×") and row["ours/no-MALA"].endswith("×")

    assert llc_time[0] == ["model", "chains×draws (repeats)", "ours s", "vmap s"]
    assert [r[:2] for r in llc_time[1:]] == [["mlp", "2×4 (1)"], ["mlp", "2×4 (1)"]]
    assert llc_time[2][3] != "–"  # the second set runs chain_batching="vmap" too
    assert llc_est[0] == ["model", "chains×draws (repeats)", "ours λ̂ ± SE", "vmap λ̂ ± SE", "ours L(w*)", "ours E[L]"]
    assert all("±" in r[2] for r in llc_est[1:])
    assert not any("devinterp" in cell for t in tables for r in t for cell in r)  # no devinterp column anywhere
    assert (tmp_path / "bench.json").stat().st_size > 0


def test_bench_sampler_help_and_devinterp_detection(monkeypatch):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert proc.returncode == 0
    for opt in ("--models", "--steps", "--repeats", "--device", "--no-devinterp", "--markdown", "--llc-draws"):
        assert opt in proc.stdout

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import bench_sampler
    finally:
        sys.path.remove(str(SCRIPT.parent))
    monkeypatch.setitem(sys.modules, "devinterp", None)  # `import devinterp` now raises ImportError
    assert bench_sampler.devinterp_version() is None
