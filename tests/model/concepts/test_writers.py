"""Writers of one store, as real `vmmoe ingest` processes: one at a time, nothing lost, a dead one blocks no one.

A writer is held inside its lock by a child that patches ``Encoder.encode`` to print ``HOLDING`` and wait
for a line on stdin: the test knows the lock is held, and chooses when it is let go. A second writer's
"is being written by pid N" notice on stderr says that it is waiting. No sleeps synchronise anything.
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

REPO = Path(__file__).resolve().parents[3]

CLI = "import sys; from model.cli import main; sys.exit(main(sys.argv[1:]))"
HOLD_IN_ENCODE = """
import sys
from model.concepts import encoder as E

_encode = E.Encoder.encode

def holding_encode(self, *a, **k):
    print("HOLDING", flush=True)     # inside encode_pending: the writer lock is held
    sys.stdin.readline()             # until the test says go (or kills us)
    return _encode(self, *a, **k)

E.Encoder.encode = holding_encode
from model.cli import main
sys.exit(main(sys.argv[1:]))
"""

A_TEXT = ("Glaciers carve deep valleys as they slide down mountains.\n\n"
          "Meltwater from glaciers feeds many large rivers in spring.\n")
B_TEXT = ("Coral reefs grow slowly from the skeletons of tiny animals.\n\n"
          "Parrotfish graze on algae that would otherwise smother the coral.\n\n"
          "Warm water makes corals expel the algae that feed them.\n")


def _env(wait: float) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), VMMOE_STORE_WAIT=str(wait), HF_HUB_OFFLINE="1",
                TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def _start(script: str, *args, wait: float = 120, stdin=False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=REPO, env=_env(wait), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)


def _await_line(stream, marker: str) -> list[str]:
    """Lines of ``stream`` up to and including the first holding ``marker`` (fails at EOF)."""
    seen = []
    for line in stream:
        seen.append(line)
        if marker in line:
            return seen
    raise AssertionError(f"{marker!r} never came; got:\n{''.join(seen)}")


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _assert_consistent(path: Path, encoder, texts: list[str]) -> None:
    """Every text is an accepted, encoded sentence that search finds first; manifest, index and database agree."""
    with ConceptStore.open(path, encoder=encoder) as store:
        stats = store.stats()
        by_text = {s.text: s for s in store.sentences()}
        for text in texts:
            s = by_text[text]
            assert s.status == "accepted" and s.encoded, s
            hit, score = store.search(store.vectors([s.id])[0], k=1)[0]
            assert hit.id == s.id and score > 0.999
            assert store.search(text, k=1)[0][0].id == s.id
        manifest = json.loads((path / "manifest.json").read_text())
        assert stats["vectors"] == stats["encoded"] == stats["accepted"] == manifest["n_vectors"] == len(texts)
        assert manifest["generation"] == stats["generation"] and stats["to_encode"] == 0
    assert not list(path.glob("*.tmp")) and len(list(path.glob("index-*.faiss"))) == 1


def _sentences(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def test_second_writer_waits_for_the_first_then_keeps_both(tmp_path, encoder):
    store = tmp_path / "store"
    ConceptStore.create(store, encoder=encoder).close()
    (tmp_path / "a.md").write_text(A_TEXT)
    (tmp_path / "b.txt").write_text(B_TEXT)

    first = _start(HOLD_IN_ENCODE, "ingest", tmp_path / "a.md", "--store", store, stdin=True)
    try:
        _await_line(first.stdout, "HOLDING")  # a's sentences are committed, their encoding holds the lock

        # readers do not wait for the writer
        with ConceptStore.open(store) as reader:
            assert reader.stats()["accepted"] == 2 and reader.stats()["vectors"] == 0

        # a writer that will not wait long gives up naming the holder, and changes nothing
        before = _tree(tmp_path)
        impatient = _start(CLI, "ingest", tmp_path / "b.txt", "--store", store, wait=0.5)
        out, err = impatient.communicate(timeout=120)
        assert impatient.returncode == 1, out + err
        assert f"is being written by pid {first.pid}" in err and f"still being written by pid {first.pid}" in err
        assert _tree(tmp_path) == before

        # a patient one waits, says so, and goes on when the first is done
        second = _start(CLI, "ingest", tmp_path / "b.txt", "--store", store)
        _await_line(second.stderr, f"is being written by pid {first.pid}")
        first.stdin.write("go\n")
        first.stdin.flush()
        out_a, err_a = first.communicate(timeout=120)
        assert first.returncode == 0, out_a + err_a
        out_b, err_b = second.communicate(timeout=120)
        assert second.returncode == 0, out_b + err_b
        assert "writer lock acquired" in err_b
    finally:
        for p in (first,):
            if p.poll() is None:
                p.kill()
    _assert_consistent(store, encoder, _sentences(A_TEXT) + _sentences(B_TEXT))


def test_a_killed_writer_blocks_no_one_and_its_committed_sentences_are_kept(tmp_path, encoder):
    store = tmp_path / "store"
    ConceptStore.create(store, encoder=encoder).close()
    (tmp_path / "a.md").write_text(A_TEXT)
    (tmp_path / "b.txt").write_text(B_TEXT)
    first = _start(HOLD_IN_ENCODE, "ingest", tmp_path / "a.md", "--store", store, stdin=True)
    try:
        _await_line(first.stdout, "HOLDING")
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
    second = _start(CLI, "ingest", tmp_path / "b.txt", "--store", store, wait=30)
    out, err = second.communicate(timeout=180)
    assert second.returncode == 0, out + err
    assert "being written" not in err  # the kernel released the dead writer's lock
    # the killed writer's sentences were committed (accepted, not encoded): the next writer encoded them
    _assert_consistent(store, encoder, _sentences(A_TEXT) + _sentences(B_TEXT))


def test_two_ingests_started_together_into_a_new_store_keep_everything(tmp_path, encoder):
    store = tmp_path / "new" / "store"
    (tmp_path / "a.md").write_text(A_TEXT)
    (tmp_path / "b.txt").write_text(B_TEXT)
    procs = [_start(CLI, "ingest", tmp_path / name, "--store", store) for name in ("a.md", "b.txt")]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, out + err
    assert sum("created store" in out for out, _ in results) == 1  # one made it, the other added to it
    _assert_consistent(store, encoder, _sentences(A_TEXT) + _sentences(B_TEXT))
    assert not [p for p in store.parent.iterdir() if p.name != "store"]  # no temporary folders left


def test_two_store_objects_in_one_process_take_turns(tmp_path, encoder):
    """The lock belongs to the open file, not the process: a second ConceptStore on the same folder that
    writes after the first opened still sees, and keeps, everything the first one indexed."""
    path = tmp_path / "store"
    ConceptStore.create(path, encoder=encoder).close()
    one, two = ConceptStore.open(path, encoder=encoder), ConceptStore.open(path, encoder=encoder)
    try:
        ids = one.add_texts(["Volcanoes release gas and ash when magma rises."], auto_accept=True).ids
        one.encode_pending()
        two.add_texts(["Earthquakes happen when rocks along a fault slip suddenly."], auto_accept=True)
        two.encode_pending()  # two's index was loaded before one's vectors: it must re-read, not overwrite
        assert two.n_vectors == 2
        with one.writer():
            assert not two.writer_lock.acquire(blocking=False)  # excluded, even in this process
    finally:
        one.close()
        two.close()
    with ConceptStore.open(path, encoder=encoder) as again:
        assert again.n_vectors == 2 and again.search(np.asarray(again.vectors(ids)[0]), 1)[0][0].id == ids[0]
