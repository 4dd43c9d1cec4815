"""Suite-wide setup: offline, one data folder for the whole session, and the shared default store.

The environment is set at import time so that every subprocess a test starts (training runs,
`panel serve`, notebook kernels) inherits it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One data folder per test session: the default store is built there once and shared.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="vmmoe-test-home-"))
os.environ["VMMOE_HOME"] = str(_SESSION_HOME)
# The suite's default store is the small "quick" corpus (language reference + a few modules), not the full one.
os.environ["VMMOE_CORPUS"] = "quick"

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def vmmoe_home() -> Path:
    """The session's data folder ($VMMOE_HOME)."""
    return _SESSION_HOME


@pytest.fixture(scope="session")
def default_store(vmmoe_home):
    """The default concept store (the quick corpus: CPython's language reference and a few modules), built once per session."""
    from model.concepts import open_default_store

    return open_default_store()


def pytest_sessionfinish(session, exitstatus):
    """Kill training runs this session left running (a test that failed before its own cleanup).

    Runs are their own processes, meant to outlive what started them; here that would leave them
    training on into the next job. Only runs whose folder lies in this session's temp folders are touched.
    """
    import psutil

    roots = [str(_SESSION_HOME)]
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        roots.append(str(factory.getbasetemp()))
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "model.train" in cmd and "--run-dir" in cmd:
            run_dir = cmd[cmd.index("--run-dir") + 1] if cmd.index("--run-dir") + 1 < len(cmd) else ""
            if any(run_dir.startswith(root) for root in roots):
                try:
                    proc.kill()
                except psutil.Error:
                    pass
