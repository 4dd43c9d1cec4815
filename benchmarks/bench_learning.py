"""Does packing converge faster per hour? Held-out quality against steps and wall time, packed vs padded vs single.

    python benchmarks/bench_learning.py --corpus quick --steps 200             # CPU, results to $VMMOE_HOME/bench
    python benchmarks/bench_learning.py --corpus full --device cuda --update   # the H200; writes benchmarks/results

Each mode trains the same model (same config, same seed, same held-out split of the same default
store) with the real trainer (``model.train.run_training``); only ``packing`` differs: ``packed``
(rows of several documents with state resets), ``padded`` (one document per row, padded) and
``single`` (one document per step). Every ``--eval-every`` steps the trainer evaluates the held-out
documents: cosine of the prediction to the next concept, top-1/top-5 retrieval among all held-out
targets, and the copy-the-current-vector baseline. Wall time is the sum of the training steps'
``step_time`` up to that evaluation (evaluation itself is not counted, since it is the same work for
every mode). Reported: the wall time each mode needs to first reach a held-out cosine (and loss)
target, and the ratios packed/padded and packed/single (below 1: packed is faster).

``--generate`` (on by default) then loads the packed run's best checkpoint (``checkpoints/best``), picks three held-out
documents with a fixed seed (never by hand), feeds their first ``--context`` concepts and generates
continuations with ``model.infer.generate``, each mapped to its nearest store sentence (FAISS),
written to ``generate_examples.md``; ``--no-repeat`` decodes with ``generate(..., no_repeat=True)`` (each step
the nearest sentence not in the opening and not generated before), ``--generate-from RUN`` only generates,
from an existing run folder (no training). ``--update`` writes ``learning_<device>.{json,md}``, the plot
``assets/learning_<device>.png`` and ``generate_examples.md`` into the committed results.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_common import add_output_args, hardware, hardware_line, markdown_table, output_dir, write_results  # noqa: E402

MODES = ("packed", "padded", "single")
ASSETS = Path(__file__).resolve().parents[1] / "assets"


def train_mode(mode: str, args, runs_dir: Path) -> dict:
    from model.train import TrainConfig, read_metrics, run_training

    cfg = {"data": "default", "packing": mode, "steps": args.steps, "seed": args.seed, "eval_every": args.eval_every,
           "checkpoint_every": 0, "tensorboard": False, "device": args.device, "threads": args.threads,
           "name": f"bench-{mode}", **({"model": json.loads(args.model)} if args.model else {}),
           **json.loads(args.train or "{}")}
    t0 = time.perf_counter()
    state, path = run_training(TrainConfig.from_dict(cfg), runs_dir=runs_dir, progress=False)
    total = time.perf_counter() - t0
    train = read_metrics(path, "train")
    evals = read_metrics(path, "eval")
    cum, wall = 0.0, {0: 0.0}
    for r in train:
        cum += r["step_time"]
        wall[r["step"]] = cum
    curve = [{"mode": mode, "step": e["step"], "wall_s": round(wall.get(e["step"], cum), 3), "loss": e["loss"],
              "cosine": e["cosine"], "top1": e["top1"], "top5": e["top5"], "copy_cosine": e["copy_cosine"],
              "copy_top1": e["copy_top1"]} for e in evals]
    concepts = sum(r["concepts"] for r in train)
    return {"mode": mode, "state": state, "path": str(path), "curve": curve, "run_s": round(total, 1),
            "train_s": round(cum, 2), "concepts_per_s": concepts / cum if cum else 0.0, "config": cfg}


def time_to(curve: list[dict], key: str, target: float, lower_is_better: bool) -> float | None:
    for p in curve:
        if (p[key] <= target) if lower_is_better else (p[key] >= target):
            return p["wall_s"]
    return None


def plot(results: list[dict], png: Path, title: str) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install matplotlib, or the [test] extras): no plot", flush=True)
        return None
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    colors = {"packed": "tab:blue", "padded": "tab:orange", "single": "tab:green"}
    for r in results:
        c = r["curve"]
        for ax, x in ((axes[0][0], "step"), (axes[0][1], "wall_s")):
            ax.plot([p[x] for p in c], [p["cosine"] for p in c], "-o", ms=3, color=colors[r["mode"]], label=r["mode"])
        for ax, x in ((axes[1][0], "step"), (axes[1][1], "wall_s")):
            ax.plot([p[x] for p in c], [p["top1"] for p in c], "-o", ms=3, color=colors[r["mode"]], label=f"{r['mode']} top-1")
            ax.plot([p[x] for p in c], [p["top5"] for p in c], "--", color=colors[r["mode"]], label=f"{r['mode']} top-5")
    copy_cos, copy_top1 = results[0]["curve"][0]["copy_cosine"], results[0]["curve"][0]["copy_top1"]
    for ax in axes[0]:
        ax.axhline(copy_cos, color="grey", ls=":", label="copy baseline")
        ax.set_ylabel("held-out cosine")
    for ax in axes[1]:
        ax.axhline(copy_top1, color="grey", ls=":", label="copy top-1")
        ax.set_ylabel("held-out top-1 / top-5")
    for ax in axes[:, 0]:
        ax.set_xlabel("optimizer step")
    for ax in axes[:, 1]:
        ax.set_xlabel("training wall time (s)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0][1].legend(fontsize=8)
    axes[1][1].legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    print(f"plot: {png}", flush=True)
    return png


def generate_examples(run_path: str, args) -> str:
    import numpy as np

    from model.infer import generate
    from model.train import TrainConfig, load_checkpoint
    from model.train.data import load_sequences, split_documents
    from model.train.runs import RunDir

    best = RunDir(run_path).best_checkpoint()  # the lowest held-out loss, as a user would load it
    model, _, _ = load_checkpoint(best if best is not None else run_path)
    cfg = TrainConfig.from_dict(json.loads((Path(run_path) / "config.json").read_text())) \
        if (Path(run_path) / "config.json").is_file() else None
    cfg = cfg or TrainConfig.from_dict({"data": "default", "seed": args.seed})
    seqs, store = load_sequences(cfg)
    _, held = split_documents(seqs, cfg.eval_fraction, cfg.seed)
    pool = [s for s in held if len(s) >= args.context + args.generate_n]
    rng = np.random.default_rng(args.seed)
    picks = [pool[i] for i in sorted(rng.choice(len(pool), size=min(3, len(pool)), replace=False))]
    lines = [f"Three held-out documents picked with `numpy.random.default_rng({args.seed})` among the "
             f"{len(pool)} held-out documents with at least {args.context + args.generate_n} concepts; the first "
             f"{args.context} concepts are fed, then `generate(..., n={args.generate_n})` continues; each generated "
             f"vector is shown as its nearest store sentence (FAISS) with its cosine, next to the document's true "
             f"continuation{' (decoded with `no_repeat=True`: no sentence of the opening or of the continuation twice)' if args.no_repeat else ''}. "
             f"Checkpoint: {Path(run_path).name} (`checkpoints/best`).", ""]
    names = {str(d.id): d.name for d in store.documents()}
    for s in picks:
        ids = list(s.ids)
        texts = None
        steps = generate(model, store, ids[:args.context], n=args.generate_n, k=1, no_repeat=args.no_repeat)
        lines += [f"## {names.get(str(s.doc_id), s.doc_id)} (held out)", "", "**Opening (fed):**", ""]
        for i in ids[:args.context]:
            lines.append(f"> {_text(store, i, texts)}")
        lines += ["", "| # | generated (nearest sentence, cosine) | true next sentence |", "|---|---|---|"]
        for j in range(args.generate_n):
            gen = f"{steps[j].text} ({steps[j].neighbours[0][1]:.2f})" if j < len(steps) else "(stopped: repeating)"
            true = _text(store, ids[args.context + j], texts)
            lines.append(f"| {j + 1} | {gen.replace('|', '/')} | {true.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


def _text(store, sid: int, texts) -> str:
    if texts and sid in texts:
        return texts[sid]
    return store.get(sid).text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", choices=("quick", "full"), default=None, help="default store corpus ($VMMOE_CORPUS)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--model", default="", help="VMMoEConfig overrides as JSON (default: the trainer's defaults)")
    p.add_argument("--train", default="", help="further TrainConfig settings as JSON")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--context", type=int, default=4)
    p.add_argument("--generate-n", type=int, default=4)
    p.add_argument("--no-generate", action="store_true")
    p.add_argument("--no-repeat", action="store_true", help="generate with no_repeat=True")
    p.add_argument("--generate-from", default="", help="a run folder: only generate from its best checkpoint")
    add_output_args(p)
    args = p.parse_args(argv)
    if args.corpus:
        os.environ["VMMOE_CORPUS"] = args.corpus
    from model.concepts import open_default_store
    from model.concepts.default_corpus import default_corpus_name

    corpus = default_corpus_name()
    open_default_store(progress=True).close()  # built (once) before any timing
    out = output_dir(args)
    if args.generate_from:
        out.mkdir(parents=True, exist_ok=True)
        path = out / "generate_examples.md"
        path.write_text(f"# generate_examples\n\n{hardware_line(hardware(None))}\n\n"
                        f"{generate_examples(args.generate_from, args)}\n")
        print(f"examples: {path}")
        return 0
    runs_dir = Path(tempfile.mkdtemp(prefix="bench-learning-"))
    t_all = time.perf_counter()
    results = [train_mode(m, args, runs_dir) for m in args.modes.split(",")]
    hw = hardware(args.device if args.device != "auto" else None)
    load = os.getloadavg()
    by = {r["mode"]: r for r in results}
    first = results[0]["curve"]
    copy_cos = first[0]["copy_cosine"]
    # targets every mode reached: a cosine halfway from the worst start to the worst mode's best, and the loss likewise
    best_cos = min(max(p["cosine"] for p in r["curve"]) for r in results)
    best_loss = max(min(p["loss"] for p in r["curve"]) for r in results)
    start_cos, start_loss = first[0]["cosine"], first[0]["loss"]
    targets = {"cosine": round(start_cos + 0.9 * (best_cos - start_cos), 3),
               "loss": round(start_loss - 0.9 * (start_loss - best_loss), 3)}
    summary = []
    for r in results:
        c = r["curve"]
        best = max(c, key=lambda q: q["cosine"])
        summary.append({"mode": r["mode"], "train_s": r["train_s"], "concepts/s": round(r["concepts_per_s"], 1),
                        "best cosine": best["cosine"], "at step": best["step"], "top1": best["top1"], "top5": best["top5"],
                        "copy cosine": copy_cos, "final cosine": c[-1]["cosine"],
                        f"s to cosine≥{targets['cosine']}": time_to(c, "cosine", targets["cosine"], False),
                        f"s to loss≤{targets['loss']}": time_to(c, "loss", targets["loss"], True)})
    ratios = {}
    for key in ("cosine", "loss"):
        col = [k for k in summary[0] if k.startswith(f"s to {key}")][0]
        t = {s["mode"]: s[col] for s in summary}
        for other in ("padded", "single"):
            if t.get("packed") and t.get(other):
                ratios[f"{key}: packed/{other}"] = round(t["packed"] / t[other], 3)
    title = (f"bench_learning: {corpus} corpus, {args.steps} steps, seed {args.seed}, device {args.device} — "
             f"{hardware_line(hw)}")
    png = plot(results, (ASSETS if args.update else out) / f"learning_{args.device.split(':')[0]}.png", title)
    md = [f"Corpus: **{corpus}** (`VMMOE_CORPUS={corpus}`), {args.steps} steps per mode, eval every {args.eval_every}, "
          f"seed {args.seed}, device `{args.device}`, load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}. "
          f"Command: `python benchmarks/bench_learning.py {' '.join(argv if argv is not None else sys.argv[1:])}`.",
          "", markdown_table(summary), "",
          "Wall time to reach the target (training steps only), packed divided by the other mode "
          "(below 1: packed gets there sooner):", "",
          markdown_table([{"ratio": k, "value": v} for k, v in ratios.items()]) if ratios else "(a mode did not reach a target)",
          "", "Every evaluation:", "",
          markdown_table([p for r in results for p in r["curve"]])]
    if png:
        md += ["", f"![learning curves]({'../../assets/' if args.update else ''}{png.name})"]
    name = f"learning_{args.device.split(':')[0]}"
    write_results(name, [p for r in results for p in r["curve"]], "\n".join(md), hw, out,
                  extra={"summary": summary, "ratios": ratios, "targets": targets, "corpus": corpus,
                         "loadavg": load, "total_s": round(time.perf_counter() - t_all, 1),
                         "config": results[0]["config"]})
    print(markdown_table(summary))
    print(ratios)
    if not args.no_generate and "packed" in by:
        text = generate_examples(by["packed"]["path"], args)
        path = out / "generate_examples.md"
        path.write_text(f"# generate_examples\n\n{hardware_line(hw)}\n\n{text}\n")
        print(f"examples: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
