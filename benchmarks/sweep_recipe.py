"""Which training recipe generalises? A sweep on an exported corpus, model-level API only.

    python -m benchmarks.sweep_recipe --data corpus.npz --list                 # the configs
    python -m benchmarks.sweep_recipe --data corpus.npz --only base,drop0.1 --out results/
    python -m benchmarks.sweep_recipe --data corpus.npz --workers 8 --out $OUT   # all, 8 processes

The corpus file comes from ``benchmarks/export_corpus.py`` (float16 unit vectors + document
offsets). A seeded 10% of the *documents* is held out (like ``model.train.data.split_documents``);
documents are cut into pieces of at most ``max_len`` and packed (``model.pack_sequences``, best-fit
decreasing) into ``rows`` rows per step. Each config trains a fresh ``model.VMMoE`` with AdamW,
linear warmup then cosine decay to ``lr * min_lr_ratio``, grad-norm clipping, and the MoE aux loss.

Measured on the held-out documents every ``eval_every`` steps: mean cosine of the prediction to
the next concept, and top-1/top-5 retrieval of the true next concept among *all* held-out targets
(by cosine), next to two baselines computed the same way: copy the current vector, and the running
mean of the segment so far. A config's "best" is the evaluation with the highest held-out cosine
(what keeping ``checkpoints/best`` by held-out loss gives for the cosine loss).

Knobs this script prototypes around the model (not in VMMoEConfig yet):

- ``dropout``: dropout on the in_proj output and on every Mamba and FFN/MoE branch output
  (forward hooks; padding stays 0 since dropout keeps zeros zero).
- ``noise``: Gaussian noise of total norm ~``noise`` added to the *input* vectors when training
  (targets stay clean).
- ``residual``: the prediction is ``values + model(values)``, i.e. the model learns the change from
  the current concept, so it starts at the copy baseline.
- ``input_scale``: the model reads ``values * input_scale`` (targets unchanged). Unit concept
  vectors have components of about 1/sqrt(d) = 0.05, so in_proj's output is tiny next to what the
  blocks (which read RMS-normalised input) add to the residual stream; ``"sqrt"`` = sqrt(d_concept)
  gives components of about 1.
- losses: ``cosine``, ``mse``, ``infonce`` (in-batch), ``infonce`` with ``negatives`` random
  training vectors as shared distractors (store-sampled negatives), and ``nce_weight`` > 0 on a
  cosine run: cosine + nce_weight * InfoNCE.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

BASE = dict(
    # model (VMMoEConfig; d_concept from the data)
    d_model=256, n_layers=4, n_experts=8, top_k=2, d_state=16,
    # data and steps
    max_len=256, rows=8, steps=600, data_fraction=1.0, corpus="all", eval_fraction=0.1,
    # optimisation (the trainer's defaults)
    lr=1e-3, min_lr_ratio=0.1, warmup=20, weight_decay=0.01, beta2=0.95, grad_clip=1.0, schedule="cosine",
    # loss
    loss="cosine", temperature=0.05, negatives=0, nce_weight=0.0,
    # regularisation prototypes
    dropout=0.0, noise=0.0, residual=False, input_scale=1.0,
    eval_every=50, seed=0,
)

# name -> overrides of BASE; one factor at a time around BASE, then combinations
SQ = "sqrt"
CONFIGS: dict[str, dict] = {
    # first wave (the one-factor changes that matter most)
    "base": {},
    "scale": dict(input_scale=SQ),
    "combo": dict(dropout=0.1, weight_decay=0.1, nce_weight=0.1, residual=True),
    "scale-combo": dict(input_scale=SQ, dropout=0.1, weight_decay=0.1, nce_weight=0.1, residual=True),
    "drop0.1": dict(dropout=0.1),
    "scale-drop0.1": dict(input_scale=SQ, dropout=0.1),
    "scale-cos+nce": dict(input_scale=SQ, nce_weight=0.1),
    "scale-infonce": dict(input_scale=SQ, loss="infonce"),
    "scale-d128-L2": dict(input_scale=SQ, d_model=128, n_layers=2),
    "wd0.1": dict(weight_decay=0.1),
    "residual": dict(residual=True),
    "cos+nce": dict(nce_weight=0.1),
    "infonce": dict(loss="infonce"),
    "infonce-neg": dict(loss="infonce", negatives=1024),
    "mse": dict(loss="mse"),
    # second wave
    "scale-drop0.1-nce": dict(input_scale=SQ, dropout=0.1, nce_weight=0.1),
    "scale-lr3e-4": dict(input_scale=SQ, lr=3e-4),
    "scale-wd0.1": dict(input_scale=SQ, weight_decay=0.1),
    "scale-drop0.3": dict(input_scale=SQ, dropout=0.3),
    "scale-noise0.3": dict(input_scale=SQ, noise=0.3),
    "scale-data25%": dict(input_scale=SQ, data_fraction=0.25),
    "scale-topics-only": dict(input_scale=SQ, corpus="topics"),
    "scale-d256-L2": dict(input_scale=SQ, d_model=256, n_layers=2),
    "scale-dense": dict(input_scale=SQ, n_experts=1, top_k=1),
    "d128-L2": dict(d_model=128, n_layers=2),
    "lr3e-3": dict(lr=3e-3),
    "lr3e-4": dict(lr=3e-4),
    "noise0.3": dict(noise=0.3),
    "data25%": dict(data_fraction=0.25),
    "topics-only": dict(corpus="topics"),
    # third wave (longer)
    "scale-combo-1500": dict(input_scale=SQ, dropout=0.1, weight_decay=0.1, nce_weight=0.1, residual=True, steps=1500),
    "scale-drop0.1-nce-1500": dict(input_scale=SQ, dropout=0.1, nce_weight=0.1, steps=1500),
    "scale-infonce-neg": dict(input_scale=SQ, loss="infonce", negatives=1024),
    "scale-d384-L4": dict(input_scale=SQ, d_model=384),
    "scale-rows16": dict(input_scale=SQ, rows=16),
}


# --- data ---------------------------------------------------------------------------------------

def load_corpus(path: str, corpus: str = "all") -> tuple[list[torch.Tensor], list[str]]:
    z = np.load(path)
    vec, off, names = z["vectors"], z["offsets"], [str(n) for n in z["names"]]
    docs = [torch.from_numpy(vec[off[i]:off[i + 1]].astype(np.float32)) for i in range(len(off) - 1)]
    docs = [F.normalize(d, dim=-1) for d in docs]
    if corpus == "topics":
        keep = [i for i, n in enumerate(names) if n.startswith("topic:")]
        docs, names = [docs[i] for i in keep], [names[i] for i in keep]
    return docs, names


def split_and_cut(docs, eval_fraction, seed, max_len, data_fraction=1.0):
    rng = np.random.default_rng(seed)
    n_eval = min(max(1, round(eval_fraction * len(docs))), len(docs) - 1)
    perm = rng.permutation(len(docs))
    held = set(perm[:n_eval].tolist())
    train_idx = [i for i in range(len(docs)) if i not in held]
    if data_fraction < 1.0:  # a seeded subset of the training documents (held-out set unchanged)
        train_idx = sorted(np.random.default_rng(seed + 1).permutation(train_idx)[
            :max(1, round(data_fraction * len(train_idx)))].tolist())

    def cut(ix):
        return [docs[i][s:s + max_len] for i in ix for s in range(0, len(docs[i]), max_len)
                if docs[i][s:s + max_len].shape[0] >= 2]
    return cut(train_idx), cut(sorted(held))


def epoch_rows(lengths: np.ndarray, max_len: int, rng) -> list[list[int]]:
    """One epoch's packed rows (lists of piece indices), in random order."""
    from model.packing import plan_rows

    order = rng.permutation(len(lengths))
    plan = plan_rows(lengths[order], max_len, strategy="bfd")
    rows: list[list[int]] = [[] for _ in range(plan.n_rows)]
    for seq, row in zip(plan.seq_index.tolist(), plan.row.tolist()):
        rows[row].append(int(order[seq]))
    return [rows[i] for i in rng.permutation(len(rows))]


# --- model prototypes ---------------------------------------------------------------------------

def add_dropout(model, p: float) -> None:
    """Dropout on the in_proj output and on each residual branch (Mamba, FFN/MoE) via forward hooks."""
    if p <= 0:
        return

    def drop_tensor(mod, inp, out):
        return F.dropout(out, p, mod.training)

    def drop_first(mod, inp, out):
        return (F.dropout(out[0], p, mod.training), *out[1:])

    model.in_proj.register_forward_hook(drop_tensor)
    for block in model.layers:
        block.mixer.register_forward_hook(drop_tensor)
        block.ffn.register_forward_hook(drop_first)


# --- evaluation ---------------------------------------------------------------------------------

def _ranks(q, c, block=1024):
    q, c = F.normalize(q, dim=-1), F.normalize(c, dim=-1)
    out = []
    for i in range(0, q.shape[0], block):
        s = q[i:i + block] @ c.T
        own = s.gather(1, torch.arange(i, i + s.shape[0], device=q.device)[:, None])
        out.append((s > own).sum(1))
    return torch.cat(out)


def retrieval(pred, tgt) -> dict:
    r = _ranks(pred, tgt)
    return {"cosine": float(F.cosine_similarity(pred, tgt, dim=-1).mean()),
            "top1": float((r < 1).float().mean()), "top5": float((r < 5).float().mean())}


class HeldOut:
    def __init__(self, pieces, max_len, device, rows_per_forward=64):
        from model.packing import pack_sequences
        from model.losses import next_concept_targets

        self.batch = pack_sequences(pieces, max_len)
        self.device, self.rpf = device, rows_per_forward
        v, seg = self.batch.values, self.batch.segment_ids
        tgt, mask = next_concept_targets(v, seg)
        self.mask = mask
        self.tgt = tgt[mask].to(device)
        cur = v[mask].to(device)
        # running mean of each segment so far (positions 0..t)
        csum = torch.zeros_like(v)
        for r in range(v.shape[0]):
            s = seg[r]
            for k in s.unique().tolist():
                if k < 0:
                    continue
                m = s == k
                csum[r, m] = torch.cumsum(v[r, m], 0)
        mean = csum[mask].to(device)
        self.n = int(mask.sum())
        self.baselines = {"copy": retrieval(cur, self.tgt), "running_mean": retrieval(mean, self.tgt)}

    @torch.no_grad()
    def evaluate(self, model, residual: bool, scale: float = 1.0) -> dict:
        was = model.training
        model.eval()
        preds = []
        v, seg = self.batch.values, self.batch.segment_ids
        for i in range(0, v.shape[0], self.rpf):
            vb, sb = v[i:i + self.rpf].to(self.device), seg[i:i + self.rpf].to(self.device)
            p = model(vb * scale, sb).prediction.float()
            if residual:
                p = p + vb
            preds.append(p[self.mask[i:i + self.rpf].to(self.device)])
        model.train(was)
        return retrieval(torch.cat(preds), self.tgt)


# --- one config ---------------------------------------------------------------------------------

def lr_at(step, c):
    if step < c["warmup"]:
        return c["lr"] * (step + 1) / c["warmup"]
    if c["schedule"] == "constant":
        return c["lr"]
    t = (step - c["warmup"]) / max(1, c["steps"] - c["warmup"])
    return c["lr"] * (c["min_lr_ratio"] + (1 - c["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def run_config(name: str, c: dict, data: str, device: str, deadline: float, log=print) -> dict:
    from model import VMMoE, VMMoEConfig, pack_sequences
    from model.losses import concept_loss

    torch.manual_seed(c["seed"])
    rng = np.random.default_rng(c["seed"])
    docs, _ = load_corpus(data, c["corpus"])
    train, held = split_and_cut(docs, c["eval_fraction"], c["seed"], c["max_len"], c["data_fraction"])
    ev = HeldOut(held, c["max_len"], device)
    scale = math.sqrt(docs[0].shape[1]) if c["input_scale"] == "sqrt" else float(c["input_scale"])
    mcfg = VMMoEConfig(d_concept=docs[0].shape[1], d_model=c["d_model"], n_layers=c["n_layers"],
                       n_experts=c["n_experts"], top_k=c["top_k"], d_state=c["d_state"])
    model = VMMoE(mcfg).to(device)
    if c["residual"]:  # start exactly at the copy baseline: the head's output is the change, 0 at init
        torch.nn.init.zeros_(model.head.weight)
        torch.nn.init.zeros_(model.head.bias)
    add_dropout(model, c["dropout"])
    opt = torch.optim.AdamW(model.parameters(), lr=c["lr"], betas=(0.9, c["beta2"]), weight_decay=c["weight_decay"])
    lengths = np.array([p.shape[0] for p in train])
    pool = torch.cat(train).to(device) if c["negatives"] else None
    rows: list[list[int]] = []
    history, best = [], None
    t0 = time.perf_counter()
    train_time = 0.0
    step = 0

    def do_eval():
        nonlocal best
        m = ev.evaluate(model, c["residual"], scale)
        rec = {"step": step, "wall_s": round(time.perf_counter() - t0, 1), **{k: round(v, 4) for k, v in m.items()}}
        history.append(rec)
        if best is None or m["cosine"] > best["cosine"]:
            best = rec
        log(f"[{name}] step {step} {rec}")

    do_eval()
    truncated = False
    while step < c["steps"]:
        if time.time() > deadline:
            truncated = True
            break
        ts = time.perf_counter()
        while len(rows) < c["rows"]:
            rows += epoch_rows(lengths, c["max_len"], rng)
        take, rows = rows[:c["rows"]], rows[c["rows"]:]
        seqs = [train[i] for r in take for i in r]
        batch = pack_sequences(seqs, c["max_len"]).to(device)
        values, seg = batch.values, batch.segment_ids
        x = values
        if c["noise"] > 0:
            x = values + c["noise"] * torch.randn_like(values) / math.sqrt(values.shape[-1])
        for g in opt.param_groups:
            g["lr"] = lr_at(step, c)
        out = model(x * scale, seg)
        pred = out.prediction + values if c["residual"] else out.prediction
        dist = None
        if c["negatives"]:
            dist = pool[torch.randint(0, pool.shape[0], (c["negatives"],), device=device)]
        lo = concept_loss(pred, values, seg, kind=c["loss"], temperature=c["temperature"], distractors=dist,
                          validate=False)
        loss = lo.loss + out.aux_loss
        if c["nce_weight"] > 0:
            loss = loss + c["nce_weight"] * concept_loss(pred, values, seg, kind="infonce",
                                                         temperature=c["temperature"], validate=False).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if c["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), c["grad_clip"])
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        train_time += time.perf_counter() - ts
        step += 1
        if step % c["eval_every"] == 0 or step == c["steps"]:
            do_eval()
    if history[-1]["step"] != step:
        do_eval()
    return {"name": name, "config": c, "n_params": sum(p.numel() for p in model.parameters()),
            "train_pieces": len(train), "train_concepts": int(lengths.sum()), "heldout_targets": ev.n,
            "baselines": ev.baselines, "best": best, "final": history[-1], "history": history,
            "steps_done": step, "truncated": truncated, "train_s": round(train_time, 1),
            "step_ms": round(1000 * train_time / max(step, 1), 1),
            "wall_s": round(time.perf_counter() - t0, 1), "device": device,
            "hardware": torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu x{torch.get_num_threads()}"}


def config_of(name: str, extra: dict | None = None) -> dict:
    if name not in CONFIGS:
        raise SystemExit(f"unknown config {name!r}; known: {', '.join(CONFIGS)}")
    c = {**BASE, **CONFIGS[name], **(extra or {})}
    return c


def table(results: list[dict]) -> str:
    lines = ["| config | best cos (step) | top-1 | top-5 | final cos | copy cos | copy top-1/top-5 | mean cos "
             "| steps | step ms | wall s | params | hardware |", "|" + "---|" * 13]
    for r in results:
        b, f, cp, mn = r["best"], r["final"], r["baselines"]["copy"], r["baselines"]["running_mean"]
        lines.append(f"| {r['name']} | {b['cosine']:.3f} ({b['step']}) | {b['top1']:.3f} | {b['top5']:.3f} "
                     f"| {f['cosine']:.3f} | {cp['cosine']:.3f} | {cp['top1']:.3f}/{cp['top5']:.3f} "
                     f"| {mn['cosine']:.3f} | {r['steps_done']}{'*' if r['truncated'] else ''} | {r['step_ms']} "
                     f"| {r['wall_s']} | {r['n_params'] / 1e6:.1f}M | {r['hardware']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--only", default="", help="comma-separated config names (default: all)")
    ap.add_argument("--set", default="", help="JSON overrides for every config, e.g. '{\"steps\": 100}'")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--out", default="")
    ap.add_argument("--workers", type=int, default=1, help="processes (each takes every n-th config)")
    ap.add_argument("--worker", type=int, default=-1, help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget-s", type=float, default=1e9, help="stop training (and evaluate) after this wall time")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(CONFIGS)
    extra = json.loads(args.set) if args.set else {}
    if args.list:
        for n in names:
            print(n, json.dumps(CONFIGS[n]))
        return 0
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.budget_s
    if args.workers > 1 and args.worker < 0:  # launcher: one process per share of the configs
        procs = []
        for w in range(args.workers):
            cmd = [sys.executable, os.path.abspath(__file__), "--data", args.data, "--only", ",".join(names),
                   "--workers", str(args.workers), "--worker", str(w), "--device", args.device,
                   "--threads", str(args.threads), "--budget-s", str(args.budget_s), "--set", json.dumps(extra)]
            if out:
                cmd += ["--out", str(out)]
            procs.append(subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}))
        for p in procs:
            p.wait()
        results = []
        if out:
            for f in sorted(out.glob("results_*.jsonl")):
                results += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
            order = {n: i for i, n in enumerate(names)}
            results.sort(key=lambda r: order.get(r["name"], 1e9))
            (out / "sweep.md").write_text(table(results) + "\n")
            print(table(results))
        return 0
    torch.set_num_threads(args.threads)
    mine = names if args.worker < 0 else names[args.worker::args.workers]
    results = []
    for n in mine:
        if time.time() > deadline:
            break
        r = run_config(n, config_of(n, extra), args.data, args.device, deadline,
                       log=lambda s: print(s, flush=True))
        results.append(r)
        if out:
            with open(out / f"results_{max(args.worker, 0)}.jsonl", "a") as f:
                f.write(json.dumps(r) + "\n")
        print(table([r]), flush=True)
    if args.worker < 0:
        print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
