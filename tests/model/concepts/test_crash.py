"""A process SIGKILLed in the middle of a save leaves a store that opens.

The child process patches ``model.fileio._replace`` (the rename step of every atomic write) to print
the temp file and its target, then sleep: the new file is written and fsynced but not yet renamed
into place, so the kill lands at the same point every time. Product code has no hook for this.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from model.concepts import ConceptStore
from model.fileio import sha256_file

N = 20_000  # a big enough index (30 MB) that the save is real work
REPO = Path(__file__).resolve().parents[3]

# Prepended to each child's script: the first atomic write announces itself and waits to be killed.
STOP_BEFORE_RENAME = """
import sys, time
import model.fileio

def _stop_before_rename(tmp, path):
    print("SAVE_HOOK", tmp, path, flush=True)
    time.sleep(60)
    raise SystemExit("not killed")

model.fileio._replace = _stop_before_rename
"""

ADD_AND_SAVE = STOP_BEFORE_RENAME + """
import numpy as np
from model.concepts import ConceptStore
store = ConceptStore.open(sys.argv[1])
ids = store.add_texts(["A late sentence number %d was added by the killed process." % i for i in range(500)],
                      auto_accept=True).ids
vecs = np.random.default_rng(1).standard_normal((len(ids), store.dim)).astype("float32")
store.add_vectors(ids, vecs, store.encoder_name)   # commits, then saves the index: killed there
print("NOT KILLED", flush=True)
"""

BUILD_DEFAULT_STORE = STOP_BEFORE_RENAME + """
from model.concepts import open_default_store
open_default_store()
"""


def _random_store(path: Path) -> ConceptStore:
    store = ConceptStore.create(path, dim=384)
    ids = store.add_documents([[f"Sentence {i} describes event {i} of the long story." for i in range(N)]],
                              auto_accept=True).ids
    assert len(ids) == N
    vecs = np.random.default_rng(0).standard_normal((N, 384)).astype(np.float32)
    store.add_vectors(ids, vecs, store.encoder_name)
    return store


def _run_until_first_save(script: str, *args: str, env: dict | None = None) -> tuple[Path, Path]:
    """Start ``script``, wait for its first atomic write to reach the rename, SIGKILL it there;
    returns (temp file, target) of the write it was killed in."""
    env = dict(env or os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True, env=env,
                             cwd=REPO)
    try:
        line = child.stdout.readline()
        assert line.startswith("SAVE_HOOK"), line
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    _, tmp, target = line.split()
    return Path(tmp), Path(target)


def test_sigkill_during_index_save_leaves_a_loadable_store(tmp_path):
    path = tmp_path / "store"
    store = _random_store(path)
    probe = store.vectors([store.sentences(limit=1)[0].id])[0]
    before_hits = [h.id for h, _ in store.search(probe, k=5)]
    store.close()
    manifest_before = (path / "manifest.json").read_text()

    tmp, target = _run_until_first_save(ADD_AND_SAVE, str(path))
    assert target.suffix == ".faiss" and tmp.is_file()             # the new index is written, not renamed
    assert not target.exists()

    # the previous index and manifest are untouched and still agree with each other ...
    assert (path / "manifest.json").read_text() == manifest_before
    manifest = json.loads(manifest_before)
    assert sha256_file(path / manifest["index_file"]) == manifest["index_sha256"]
    # ... and the store opens: the database committed the new sentences, so the stale index is rebuilt
    with ConceptStore.open(path) as again:
        assert len(again) == N + 500 and again.n_vectors == N + 500
        assert [h.id for h, _ in again.search(probe, k=5)] == before_hits
        assert again.stats()["index"] == "flat"
    assert not list(path.glob("*.tmp"))                              # the next save cleaned up


def test_killed_default_store_build_leaves_no_half_store(tmp_path):
    home = tmp_path / "home"
    tmp, _ = _run_until_first_save(BUILD_DEFAULT_STORE, env=dict(os.environ, VMMOE_HOME=str(home)))
    name = f"default-store-{os.environ['VMMOE_CORPUS']}-v2"
    assert f".{name}-building-" in str(tmp)                          # the build was writing in its temp folder
    assert not (home / name).exists()                              # nothing half-built under the real name
    assert [p.name for p in home.iterdir() if p.name.startswith(f".{name}-building-")]
