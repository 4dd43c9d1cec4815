"""Concept store speed: what the store adds to encoding, and flat vs IVF search.

1. Ingestion throughput (sentences/s), in one run, same loaded MiniLM, same sentences:
   ``plain``  -- ``SentenceTransformer.encode(sentences, normalize_embeddings=True)``, nothing else;
   ``store``  -- ``ConceptStore.add_documents`` (curation checks, SQLite) + ``encode_pending``
                 (encoding, near-duplicate search, SQLite, FAISS index, atomic save).
   The two alternate for ``--rounds`` rounds and the medians are compared (goal: store >= 0.9x plain).
   Both wall time and process CPU time (all threads) are recorded: on a shared machine the wall
   time of one run swings with other people's load, the CPU time of the work far less.
   The sentences are the default corpus's (CPython's language reference) that pass the text checks;
   pySBD splitting is timed separately (it is part of ``add_texts``/``add_files``, not of encoding).
2. Search latency on ``--n-vectors`` (default 100k) 384-d unit vectors for the exact flat index and
   the IVF index the store switches to at ``FLAT_MAX`` vectors, with IVF's recall@10 against flat, at
   the store's ``nprobe`` and a few others. Two data sets: uniform random unit vectors (no structure:
   the worst case for IVF) and clustered ones (2,000 random centres + noise of two sizes, closer to
   real sentence embeddings, which form topics); queries are fresh samples of the same distribution.

    python benchmarks/bench_concepts.py                   # both parts
    python benchmarks/bench_concepts.py --skip-ingest     # search only (no encoder needed)
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from bench_common import add_output_args, hardware, hardware_line, markdown_table, output_dir, write_results


def corpus_sentences(n: int) -> tuple[list[str], float]:
    """The first ``n`` default-corpus sentences that pass the text checks, and the pySBD split time (s)."""
    from model.concepts import checks as C
    from model.concepts.default_corpus import default_corpus
    from model.concepts.ingest import split_sentences

    _, texts = default_corpus()
    t0 = time.perf_counter()
    sentences = [s for t in texts for s in split_sentences(t)]
    split_s = time.perf_counter() - t0
    seen, out = set(), []
    for s in sentences:
        key = C.normalize(s)
        if key not in seen and C.passed(C.text_checks(s)):
            seen.add(key)
            out.append(s)
    return out[:n], split_s / len(sentences)


def bench_ingest(args) -> list[dict]:
    from model.concepts import ConceptStore, Encoder

    sentences, split_per_sentence = corpus_sentences(args.n_sentences)
    enc = Encoder(device="cpu")
    enc.model.encode(sentences[:64], batch_size=args.batch_size)  # warm-up

    def plain() -> None:
        enc.model.encode(sentences, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)

    def store() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            s = ConceptStore.create(Path(tmp) / "store", encoder=enc)
            s.add_documents([sentences], auto_accept=True)
            s.encode_pending(batch_size=args.batch_size)
            s.close()

    wall, cpu = {"plain": [], "store": []}, {"plain": [], "store": []}
    for r in range(args.rounds):
        for name, fn in (("plain", plain), ("store", store)) if r % 2 == 0 else (("store", store), ("plain", plain)):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
            print(f"  round {r + 1} {name:6} {len(sentences) / wall[name][-1]:8.1f} sentences/s wall, "
                  f"{len(sentences) / cpu[name][-1]:8.1f} per CPU-second", flush=True)
    rows = []
    for name in ("plain", "store"):
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        rows.append({"case": name, "sentences": len(sentences), "wall_s": w, "sentences_per_s": len(sentences) / w,
                     "cpu_s": c, "sentences_per_cpu_s": len(sentences) / c, "runs": len(wall[name])})
    for r in rows:
        r["vs_plain_wall"] = r["sentences_per_s"] / rows[0]["sentences_per_s"]
        r["vs_plain_cpu"] = r["sentences_per_cpu_s"] / rows[0]["sentences_per_cpu_s"]
    rows.append({"case": "pysbd split (extra, per sentence)", "sentences": len(sentences),
                 "wall_s": split_per_sentence * len(sentences), "sentences_per_s": 1.0 / split_per_sentence})
    return rows


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def datasets(n: int, n_queries: int, dim: int = 384, n_centres: int = 2000, seed: int = 0):
    rng = np.random.default_rng(seed)
    yield "uniform", _unit(rng.standard_normal((n, dim))), _unit(rng.standard_normal((n_queries, dim)))
    centres = _unit(rng.standard_normal((n_centres, dim)))

    def sample(m, noise):
        # noise of norm ``noise`` around a unit centre: cosine 1/sqrt(1+noise^2) to the centre and
        # 1/(1+noise^2) between two samples of one centre (1.0: 0.71 and 0.5; 1.5: 0.55 and 0.31)
        return _unit(centres[rng.integers(0, len(centres), m)] + rng.standard_normal((m, dim)) * (noise / np.sqrt(dim)))

    for noise in (1.0, 1.5):
        yield f"clustered-{noise}", sample(n, noise), sample(n_queries, noise)


def bench_search(args) -> list[dict]:
    from model.concepts.index import NPROBE, build_index

    rows = []
    for data, base, queries in datasets(args.n_vectors, args.n_queries):
        ids = np.arange(len(base), dtype=np.int64)
        flat = build_index(base, ids, "flat")
        t0 = time.perf_counter()
        ivf = build_index(base, ids, "ivf")
        ivf_build = time.perf_counter() - t0
        ivf_raw = faiss.downcast_index(ivf)
        _, truth = flat.search(queries, 10)

        def latency(index) -> tuple[float, float]:
            one = []
            for q in queries[:args.single_queries]:
                t = time.perf_counter()
                index.search(q[None, :], 10)
                one.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            index.search(queries, 10)
            return statistics.median(one), (time.perf_counter() - t) * 1000 / len(queries)

        one, batch = latency(flat)
        rows.append({"data": data, "index": "flat (exact)", "nprobe": None, "ms_per_query": one,
                     "ms_per_query_batched": batch, "recall@10": 1.0, "build_s": None})
        flat_one = one
        for nprobe in sorted({NPROBE, 4, 16, 64, 128}):
            ivf_raw.nprobe = nprobe
            one, batch = latency(ivf)
            _, found = ivf.search(queries, 10)
            recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.tolist(), truth.tolist())])
            rows.append({"data": data, "index": f"ivf{ivf_raw.nlist}" + (" (store)" if nprobe == NPROBE else ""),
                         "nprobe": nprobe, "ms_per_query": one, "ms_per_query_batched": batch,
                         "recall@10": float(recall), "build_s": ivf_build, "speedup_vs_flat": flat_one / one})
        for r in rows[-6:]:
            print(f"  {data:9} {r['index']:18} nprobe={str(r['nprobe']):4} {r['ms_per_query']:7.3f} ms/query  "
                  f"recall@10 {r['recall@10']:.3f}", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-sentences", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--n-vectors", type=int, default=100_000)
    p.add_argument("--n-queries", type=int, default=1000)
    p.add_argument("--single-queries", type=int, default=200)
    p.add_argument("--skip-ingest", action="store_true")
    p.add_argument("--skip-search", action="store_true")
    add_output_args(p)
    args = p.parse_args(argv)
    hw = hardware()
    hw["faiss"] = faiss.__version__
    hw["faiss_omp_threads"] = faiss.omp_get_max_threads()
    hw["load_average_at_start"] = os.getloadavg()
    print(hardware_line(hw), f"faiss {faiss.__version__} ({hw['faiss_omp_threads']} OpenMP threads)")
    if not args.skip_ingest:
        print(f"ingestion: {args.n_sentences} sentences, plain encode vs store, {args.rounds} rounds")
        rows = bench_ingest(args)
        print(f"store / plain = {rows[1]['vs_plain_cpu']:.2f}x by CPU time, {rows[1]['vs_plain_wall']:.2f}x by wall "
              f"time  (goal >= 0.9x)")
        md = markdown_table(rows, ["case", "sentences", "wall_s", "sentences_per_s", "vs_plain_wall", "cpu_s",
                                   "sentences_per_cpu_s", "vs_plain_cpu", "runs"])
        print(md)
        write_results("concepts_ingest", rows, md, hw=hw, out_dir=output_dir(args))
    if not args.skip_search:
        print(f"search: {args.n_vectors} vectors, {args.n_queries} queries, k=10")
        rows = bench_search(args)
        md = markdown_table(rows, ["data", "index", "nprobe", "ms_per_query", "ms_per_query_batched", "recall@10",
                                   "speedup_vs_flat", "build_s"])
        print(md)
        write_results("concepts_search", rows, md, hw=hw, out_dir=output_dir(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
