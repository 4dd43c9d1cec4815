"""The benchmarks are scripts run as files, from any folder, and leave the committed figures alone.

There is no ``benchmarks`` package (pysbd installs one of its own that would shadow it); each script
imports ``bench_common`` from its own folder. Results go to ``--out`` (default ``$VMMOE_HOME/bench``);
``benchmarks/results/`` changes only with ``--update``.
"""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCH.glob("bench_*.py") if p.name != "bench_common.py")


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _env(home: Path) -> dict:
    env = {**os.environ, "VMMOE_HOME": str(home)}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def test_there_is_no_benchmarks_package():
    assert not (BENCH / "__init__.py").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_runs_as_a_file_from_another_folder(script, tmp_path):
    p = subprocess.run([sys.executable, str(BENCH / script), "--help"], cwd=tmp_path, env=_env(tmp_path),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "--out" in p.stdout and "--update" in p.stdout


def test_results_go_to_vmmoe_home_or_out_and_the_committed_ones_stay(tmp_path):
    before = _digest(BENCH / "results")
    cmd = [sys.executable, str(BENCH / "bench_packing.py"), "--quick", "--repeats", "1"]
    p = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path / "home"), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert sorted(_digest(tmp_path / "home" / "bench")) == ["packing_quick.json", "packing_quick.md"]
    assert str(tmp_path / "home" / "bench" / "packing_quick.json") in p.stdout  # says where they went
    p = subprocess.run(cmd + ["--out", str(tmp_path / "mine")], cwd=tmp_path, env=_env(tmp_path / "home"),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "mine" / "packing_quick.md").is_file()
    assert _digest(BENCH / "results") == before
