"""Build a concept store from the offline corpus (``model.concepts.stdlib_corpus``) and/or export a
store's documents to one ``.npz`` file that training experiments can read without the store:

    python -m benchmarks.export_corpus --build /tmp/stdlib-store --out corpus.npz   # build, then export
    python -m benchmarks.export_corpus --store ~/.cache/vmmoe/default-store --out small.npz

The file holds ``vectors`` (float16, (concepts, dim), L2-normalised before the cast), ``offsets``
(int64, (documents + 1,): document i is ``vectors[offsets[i]:offsets[i+1]]``), ``names`` (document
names) and ``meta`` (a JSON string: source, Python version, encoder, counts, build times). Only
documents with at least ``--min-len`` accepted concepts are written, in store order.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def build_store(path: Path, quick: int = 0, progress: bool = True) -> tuple[object, dict]:
    """A new store at ``path`` from the corpus (``quick`` > 0: only that many quick documents)."""
    from model.concepts.encoder import DEFAULT_ENCODER
    from model.concepts.stdlib_corpus import quick_documents, stdlib_documents
    from model.concepts.store import ConceptStore

    t0 = time.perf_counter()
    docs = quick_documents(quick) if quick else list(stdlib_documents())
    t_read = time.perf_counter() - t0
    store = ConceptStore.create(path, encoder=DEFAULT_ENCODER)
    t1 = time.perf_counter()
    sentences = accepted = 0
    by_source: dict[str, list] = {}
    for d in docs:  # one add_texts call per source keeps document order (sources are contiguous)
        by_source.setdefault(d.source, []).append(d)
    for source, group in by_source.items():
        rep = store.add_texts([d.text for d in group], source=source, names=[d.name for d in group],
                              auto_accept=True)
        sentences += rep.sentences
        accepted += rep.accepted
    t_curate = time.perf_counter() - t1
    bar = None
    if progress:
        def bar(done, total):
            print(f"\rencoding {done}/{total}", end="", file=sys.stderr, flush=True)
    t2 = time.perf_counter()
    enc = store.encode_pending(progress=bar)
    t_encode = time.perf_counter() - t2
    if progress:
        print(file=sys.stderr)
    info = {"documents_read": len(docs), "sentences": sentences, "accepted_by_text_checks": accepted,
            "near_duplicates": enc.near_duplicates, "encoded": enc.encoded, "read_s": round(t_read, 1),
            "curate_s": round(t_curate, 1), "encode_s": round(t_encode, 1)}
    return store, info


def export(store, out: Path, min_len: int = 2, info: dict | None = None) -> dict:
    seqs = store.document_sequences(min_len=min_len)
    vecs = [np.asarray(s.vectors, dtype=np.float32) for s in seqs]
    lengths = np.array([len(v) for v in vecs], dtype=np.int64)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    names = np.array([str(getattr(s, "name", s.doc_id)) for s in seqs])
    meta = {**(info or {}), "python": platform.python_version(), "encoder": store.encoder_name,
            "documents": int(len(seqs)), "concepts": int(offsets[-1]), "min_len": min_len,
            "mean_len": float(lengths.mean()) if len(lengths) else 0.0,
            "median_len": float(np.median(lengths)) if len(lengths) else 0.0}
    np.savez(out, vectors=np.concatenate(vecs).astype(np.float16), offsets=offsets, names=names,
             meta=np.array(json.dumps(meta)))
    return meta


def export_texts(texts_json: Path, out: Path, encoder: str, device: str = "auto", min_len: int = 2,
                 near_duplicate_cosine: float = 0.95) -> dict:
    """Encode already curated sentences (``{"names": [...], "sentences": [[...], ...]}``, the accepted
    sentences of each document in order, e.g. read from a store's database before encoding) and
    export them, with the store's first-build near-duplicate rule: a sentence whose cosine with any
    earlier sentence reaches ``near_duplicate_cosine`` is dropped. For encoding on another machine
    (the GPU box), where no store is needed."""
    import torch

    from model.concepts.encoder import Encoder

    d = json.loads(Path(texts_json).read_text())
    names, docs = d["names"], d["sentences"]
    flat = [t for doc in docs for t in doc]
    enc = Encoder(encoder, device=device)
    t0 = time.perf_counter()
    vecs = enc.encode(flat, batch_size=256)
    t_encode = time.perf_counter() - t0
    v = torch.from_numpy(vecs).to(enc.device)
    keep = torch.ones(len(flat), dtype=torch.bool, device=v.device)
    for i in range(0, len(flat), 4096):  # earlier = lower index (store order)
        sims = v[i:i + 4096] @ v.T
        j = torch.arange(len(flat), device=v.device)
        sims[j[None, :] >= (i + torch.arange(sims.shape[0], device=v.device))[:, None]] = -1
        keep[i:i + 4096] = sims.max(1).values < near_duplicate_cosine
    keep = keep.cpu().numpy()
    out_vecs, lengths, kept_names, pos = [], [], [], 0
    for name, doc in zip(names, docs):
        k = keep[pos:pos + len(doc)]
        if k.sum() >= min_len:
            out_vecs.append(vecs[pos:pos + len(doc)][k])
            lengths.append(int(k.sum()))
            kept_names.append(name)
        pos += len(doc)
    lengths = np.array(lengths, dtype=np.int64)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    meta = {"python": platform.python_version(), "encoder": enc.name, "encode_device": enc.device,
            "encode_s": round(t_encode, 1), "sentences_in": len(flat), "near_duplicates": int((~keep).sum()),
            "accepted": int(keep.sum()), "documents": len(kept_names), "concepts": int(offsets[-1]),
            "min_len": min_len, "mean_len": float(lengths.mean()), "median_len": float(np.median(lengths))}
    np.savez(out, vectors=np.concatenate(out_vecs).astype(np.float16), offsets=offsets,
             names=np.array(kept_names), meta=np.array(json.dumps(meta)))
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--build", type=Path, help="build a new store here from the offline corpus, then export it")
    g.add_argument("--store", type=Path, help="export an existing store")
    g.add_argument("--texts", type=Path, help="encode and export curated sentences (JSON, see export_texts)")
    ap.add_argument("--encoder", default="all-MiniLM-L6-v2", help="with --texts: encoder name or folder")
    ap.add_argument("--device", default="auto", help="with --texts: encoder device")
    ap.add_argument("--quick", type=int, default=0, help="with --build: only this many quick documents")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--min-len", type=int, default=2)
    args = ap.parse_args(argv)
    if args.texts:
        print(json.dumps(export_texts(args.texts, args.out, args.encoder, args.device, args.min_len), indent=1))
        return 0
    from model.concepts.store import ConceptStore

    if args.build:
        store, info = build_store(args.build, args.quick)
    else:
        store, info = ConceptStore.open(args.store), {}
    meta = export(store, args.out, args.min_len, info)
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
