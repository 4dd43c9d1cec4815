"""The training loop: one process (or one DDP rank) training a VMMoE on packed concept sequences.

    data (TrainSequence list) -> held-out-document split -> PackSampler (which sequences per step)
      -> layout per packing mode -> VMMoE forward -> next-concept loss + aux loss -> AdamW step
      -> metrics.jsonl / TensorBoard / status.json, periodic checkpoints

After every evaluation the weights with the lowest held-out loss so far are kept as
``checkpoints/best`` (step 0 included: a residual model starts at copy). With
``early_stopping_patience`` > 0 the run ends after that many evaluations in a row without a lower
held-out loss: state ``finished``, ``stopped_early: true`` and ``stop_reason`` in status.json. At the end
status.json holds the best evaluation against the copy baseline in plain words (``verdict``).

``run_training(cfg, run_dir)`` is what ``vmmoe train`` and ``python -m model.train`` call. A stop
request (SIGTERM, SIGINT or the run's STOP file) is honoured at the next step boundary: checkpoint,
then exit. Resuming restores the weights, the optimizer and scheduler, every RNG and the data
position, so on CPU a resumed run's losses equal an uninterrupted run's step for step.

Under ``torchrun`` (WORLD_SIZE > 1) every rank trains on its own share of the packed rows
(PackSampler), gradients are averaged by DistributedDataParallel (gloo on CPU, nccl on CUDA), and
rank 0 alone writes the run folder.
"""
from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import random
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_model
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model.device import autocast, cpu_threads, describe, peak_memory_mb, resolve_device, synchronize
from model.losses import concept_loss, concept_metrics
from model.packing import Packing, pack_sequences
from model.train.config import TrainConfig
from model.train.data import PackSampler, TrainSequence, load_sequences, split_documents
from model.train.evaluate import evaluate_held_out
from model.train.runs import (LOCK_FD_ENV, RunDir, RunLock, default_runs_dir, find_checkpoint, new_run_name,
                              save_best_checkpoint, save_checkpoint)
from model.train.summary import summarize_run
from model.vmmoe import VMMoE

RANK_LOG_ENV = "VMMOE_RANK_LOG_DIR"


@dataclass
class DistInfo:
    """Where this process sits in a (possibly one-process) job."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "DistInfo":
        """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK (absent: a single process)."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))


def lr_lambda(cfg: TrainConfig):
    """Linear warm-up to lr, then cosine decay to lr * min_lr_ratio at the last step."""
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # nanoGPT: decay matrices, not biases and norm gains
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def layouts(vectors: list[torch.Tensor], packing: Packing | str, max_len: int, strategy: str):
    """The forward passes of one step: one packed/padded batch, or one single-sequence batch per sequence."""
    batch = pack_sequences(vectors, max_len, mode=Packing(packing).layout, strategy=strategy)
    return list(batch.steps(1)) if batch.mode == "single" else [batch]


class Trainer:
    """Holds the model, optimizer, data and run folder of one run; ``train()`` runs it to the end or a stop."""

    def __init__(self, cfg: TrainConfig, run: RunDir | None = None, resume: bool = False,
                 dist_info: DistInfo | None = None, progress: bool = False, sequences: list[TrainSequence] | None = None):
        self.cfg, self.run, self.progress = cfg, run, progress
        self.dist = dist_info or DistInfo()
        self.stop_requested = False
        self.stop_signal: int | None = None
        self.device, self.dtype = resolve_device(self._device_name(), cfg.precision)
        if cfg.threads or self.device.type == "cpu":  # the cores free now, shared among the local ranks
            torch.set_num_threads(cpu_threads(cfg.threads, processes=_local_world_size(self.dist)))
        seed_everything(cfg.seed)

        seqs, self.store = (sequences, None) if sequences is not None else load_sequences(cfg)
        self.train_seqs, self.eval_seqs = split_documents(seqs, cfg.eval_fraction, cfg.seed)
        self.eval_seqs = self.eval_seqs[:cfg.eval_max_sequences]
        self.sampler = PackSampler([len(s) for s in self.train_seqs], cfg.max_len, cfg.rows_per_step,
                                   self.dist.world_size, self.dist.rank, cfg.seed, cfg.strategy)

        self.model_config = cfg.model_config(self.train_seqs[0].vectors.shape[1])
        self.model = VMMoE(self.model_config).to(self.device)
        self.optimizer = make_optimizer(self.model, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.step = 0
        # early stopping / best checkpoint: the lowest held-out loss, its step, evaluations since
        self.best = {"loss": math.inf, "step": None, "bad_evals": 0}
        self.stopped_early: str | None = None
        self.seen = torch.zeros(len(self.train_seqs), dtype=torch.long)  # times each sequence was trained on
        if resume:
            self._restore()
        self.ddp = None
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        self.meta = {**describe(self.device, self.dtype), "packing": cfg.packing,
                     "leaky": not cfg.isolate_segments, "world_size": self.dist.world_size,
                     "n_params": sum(p.numel() for p in self.model.parameters()),
                     "train_sequences": len(self.train_seqs), "eval_sequences": len(self.eval_seqs),
                     "train_documents": len({s.doc_id for s in self.train_seqs}),
                     "eval_documents": len({s.doc_id for s in self.eval_seqs}),
                     "steps_per_epoch": self.sampler.steps_per_epoch}

    def _device_name(self) -> str:
        # under DDP on CUDA each rank takes its own card
        if self.dist.enabled and self.cfg.device in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.dist.local_rank}"
        return self.cfg.device

    # --- checkpoints ----------------------------------------------------------------------

    def _restore(self) -> None:
        ckpt, meta = find_checkpoint(self.run.path)
        load_model(self.model, str(ckpt / "model.safetensors"), device=str(self.device))
        state = torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.best = state.get("best", self.best)
        self.resumed_from = str(ckpt)

    def checkpoint(self) -> Path | None:
        if not (self.run and self.dist.is_main) or getattr(self, "_saved_step", None) == self.step:
            return None
        self._saved_step = self.step
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "rng": rng_state(), "step": self.step, "best": dict(self.best), "data_position": self.sampler.position(self.step)}
        return save_checkpoint(self.run, self.step, self.model, self.model_config.to_dict(), self.cfg.to_dict(),
                               state, {**self.meta, "data_position": list(self.sampler.position(self.step))},
                               keep=self.cfg.keep_checkpoints)

    # --- one step -------------------------------------------------------------------------

    def _forward_loss(self, model, batch):
        with autocast(self.device, self.dtype):
            out = model(batch.values, batch.segment_ids)
        lo = concept_loss(out.prediction.float(), batch.values, batch.segment_ids, kind=self.cfg.loss,
                          temperature=self.cfg.temperature, nce_weight=self.cfg.nce_weight,
                          nce_unseen=self.cfg.nce_unseen)
        return out, lo

    def train_step(self, seq_index: list[int]) -> dict:
        """One optimizer step over the given training sequences; returns its metrics record."""
        cfg, model = self.cfg, self.ddp or self.model
        vectors = [self.train_seqs[i].vectors for i in seq_index]
        self.seen[seq_index] += 1
        synchronize(self.device)
        t0 = time.perf_counter()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        batches = layouts(vectors, cfg.packing_mode, cfg.max_len, cfg.strategy)
        n_total = sum(v.shape[0] - 1 for v in vectors)  # next-concept targets in this step
        sums = {"loss": 0.0, "aux_loss": 0.0, "balance": 0.0, "z": 0.0}
        loads, predictions, positions, parts = None, [], 0, {}
        for i, batch in enumerate(batches):
            batch = batch.to(self.device)
            positions += batch.segment_ids.numel()
            last = i == len(batches) - 1
            sync = contextlib.nullcontext() if (self.ddp is None or last) else self.ddp.no_sync()
            with sync:
                out, lo = self._forward_loss(model, batch)
                w = lo.n_targets / n_total  # single mode: each forward's share of the step's mean loss
                ((lo.loss + out.aux_loss) * w).backward()
            sums["loss"] += lo.loss.item() * w
            for k, v in lo.parts.items():  # the terms of a combined loss (nce_weight > 0)
                parts[k] = parts.get(k, 0.0) + v * w
            sums["aux_loss"] += out.aux_loss.item() * w
            sums["balance"] += out.aux["balance"].item() * w
            sums["z"] += out.aux["z"].item() * w
            layer_load = torch.stack([r.load.float() for r in out.routing]) * w if out.routing else None
            loads = layer_load if loads is None else loads + layer_load
            if len(batches) > 1:
                predictions += batch.unpack(out.prediction.detach().float())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip or float("inf"))
        self.optimizer.step()
        self.scheduler.step()
        synchronize(self.device)
        step_time = time.perf_counter() - t0

        with torch.no_grad():  # metrics on one packed layout whatever the mode (same retrieval pool)
            if len(batches) > 1:
                packed = pack_sequences(vectors, cfg.max_len, mode="packed", strategy=cfg.strategy).to(self.device)
                pred = pack_sequences(predictions, cfg.max_len, mode="packed", strategy=cfg.strategy).values
                m = concept_metrics(pred, packed.values, packed.segment_ids)
            else:
                m = concept_metrics(out.prediction.detach().float(), batch.values, batch.segment_ids)
        concepts = sum(v.shape[0] for v in vectors)
        record = {"split": "train", "step": self.step + 1, "lr": self.scheduler.get_last_lr()[0],
                **{f"loss_{cfg.loss}": sums["loss"]}, **{f"loss_{k}": v for k, v in parts.items()}, **sums,
                "total_loss": sums["loss"] + sums["aux_loss"],
                **{k: float(v) for k, v in m.items() if k != "n_targets"}, "targets": n_total, "grad_norm": float(grad_norm),
                "concepts": concepts, "concepts_per_s": concepts / step_time,
                "utilization": concepts / positions, "expert_load": loads.tolist() if loads is not None else [],
                "step_time": step_time, "memory_mb": peak_memory_mb(self.device), "packing": cfg.packing,
                "world_size": self.dist.world_size}
        if self.dist.enabled:
            self._write_rank_log(record)
            record = self._reduce_record(record, positions)
        return record

    # the train record under DDP: these are means over the step's targets, reduced weighted by each rank's
    # targets; concepts / targets / concepts_per_s are summed; step_time and memory_mb are the slowest rank's
    _TARGET_MEANS = ("loss", "aux_loss", "balance", "z", "total_loss", "loss_cosine", "loss_mse", "loss_infonce",
                     *(f"{p}{k}" for p in ("", "copy_", "mean_")
                       for k in ("cosine", "top1", "top5", "top1_unseen", "top5_unseen")))

    def _reduce_record(self, record: dict, positions: int) -> dict:
        """The global train record of this step: every rank's share reduced (one all_reduce of sums, one of maxima)."""
        means = [k for k in self._TARGET_MEANS if k in record]
        n = float(record["targets"])
        load = torch.tensor(record["expert_load"], dtype=torch.float64).flatten()
        local = torch.tensor([record[k] for k in means], dtype=torch.float64)
        weighted = local * n if n else torch.zeros_like(local)  # no targets here: no share (nan * 0 is nan)
        sums = torch.cat([weighted, load * n, torch.tensor([n, record["concepts"], positions,
                                                            record["concepts_per_s"]], dtype=torch.float64)])
        maxima = torch.tensor([record["step_time"], record["memory_mb"]], dtype=torch.float64)
        sums, maxima = sums.to(self.device), maxima.to(self.device)
        dist.all_reduce(sums)
        dist.all_reduce(maxima, op=dist.ReduceOp.MAX)
        sums, maxima = sums.cpu(), maxima.cpu()
        total, concepts, all_positions, rate = (float(x) for x in sums[-4:])
        out = dict(record)
        for i, k in enumerate(means):
            out[k] = float(sums[i]) / total if total else float("nan")
        if not self.cfg.nce_weight:  # else loss_<kind> is its own term, reduced above
            out[f"loss_{self.cfg.loss}"] = out["loss"]
        if load.numel():
            out["expert_load"] = (sums[len(means):len(means) + load.numel()] / max(total, 1.0)).reshape(
                len(record["expert_load"]), -1).tolist()
        out.update(targets=int(total), concepts=int(concepts), concepts_per_s=rate,
                   utilization=concepts / all_positions, step_time=float(maxima[0]), memory_mb=float(maxima[1]))
        return out

    def _write_rank_log(self, record: dict) -> None:
        """With VMMOE_RANK_LOG_DIR set (tests, debugging): this rank's own share of the step, before the
        reduction, appended to ``rank{R}.jsonl`` there."""
        folder = os.environ.get(RANK_LOG_ENV)
        if folder:
            with open(Path(folder) / f"rank{self.dist.rank}.jsonl", "a") as f:
                f.write(json.dumps({**record, "rank": self.dist.rank}) + "\n")

    def evaluate(self) -> dict:
        """Loss and metrics over the held-out documents (packed, or padded for the padded/single baselines).

        top1/top5 (and copy_/mean_ ones) rank each target among the targets of its evaluation group of
        ``rows_per_step`` rows (``topk_pool`` in the record says so; ``topk_candidates`` is the mean
        group size), not among all held-out targets."""
        result = evaluate_held_out(self.model, self.cfg, [s.vectors for s in self.eval_seqs],
                                   autocast(self.device, self.dtype))
        return {"split": "eval", "step": self.step, **result, "packing": self.cfg.packing,
                "topk_pool": f"targets of each group of {self.cfg.rows_per_step} rows"}

    def after_eval(self, record: dict) -> None:
        """Keep ``checkpoints/best`` at the lowest held-out loss; count evaluations without one (early stopping)."""
        if record["loss"] < self.best["loss"]:
            self.best = {"loss": record["loss"], "step": record["step"], "bad_evals": 0}
            if self.run is not None and self.dist.is_main:
                save_best_checkpoint(self.run, self.step, self.model, self.model_config.to_dict(), self.cfg.to_dict(),
                                     {**self.meta, "eval": {k: v for k, v in record.items()
                                                            if isinstance(v, (int, float))}})
                self.run.write_status(best_step=record["step"], best_eval_loss=record["loss"],
                                      best_eval_cosine=record.get("cosine"))
        else:
            self.best["bad_evals"] += 1
        patience = self.cfg.early_stopping_patience
        if patience and self.best["bad_evals"] >= patience:
            self.stopped_early = (f"early stopping: no lower held-out loss in {patience} evaluations "
                                  f"({patience * self.cfg.eval_every} steps) after step {self.best['step']} "
                                  f"(best loss {self.best['loss']:.4f})")

    # --- the loop -------------------------------------------------------------------------

    def _stop_now(self) -> bool:
        local = self.stop_requested or bool(self.run and self.dist.is_main and self.run.stop_file.exists())
        if not self.dist.enabled:
            return local
        flag = torch.tensor([float(local), float(self.stopped_early is not None)], device=self.device)
        dist.all_reduce(flag)  # every rank stops at the same step (rank 0 alone evaluates: it decides early stops)
        if flag[1].item() and self.stopped_early is None:
            self.stopped_early = "early stopping (decided by rank 0)"
        return bool(flag[0].item())

    def replica_report(self) -> dict:
        """Under DDP: max |weight difference| between rank 0 and any replica, and how often the ranks together
        trained on each sequence since this process started (min/max over sequences)."""
        flat = torch.nn.utils.parameters_to_vector(self.model.parameters()).detach()
        ref = flat.clone()
        dist.broadcast(ref, src=0)
        diff = (flat - ref).abs().max().reshape(1)
        dist.all_reduce(diff, op=dist.ReduceOp.MAX)
        seen = self.seen.to(self.device)
        dist.all_reduce(seen)
        return {"replica_max_abs_diff": float(diff), "times_seen_min": int(seen.min()), "times_seen_max": int(seen.max())}

    def _log(self, record: dict, writer) -> None:
        if not (self.run and self.dist.is_main):
            return
        record.setdefault("world_size", self.dist.world_size)
        self.run.append_metrics(record)
        if record["split"] == "eval":  # what list_runs shows, without reading metrics.jsonl
            self.run.write_status(eval_loss=record["loss"], eval_step=record["step"])
        if writer is not None:
            if not getattr(self, "_layout_written", False):
                self._layout_written = True
                _reference_layout(writer)
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    writer.add_scalar(f"{record['split']}/{k}", v, record["step"])
            for layer, load in enumerate(record.get("expert_load", [])):
                writer.add_scalars(f"expert_load/layer{layer}", {f"e{e}": x for e, x in enumerate(load)},
                                   record["step"])

    def _install_signal_handlers(self) -> dict:
        """Route SIGTERM/SIGINT to a stop request; returns the handlers they replace (restored when train()
        ends: the closure holds this Trainer, and with it the DDP wrapper and its ProcessGroup, which must
        not outlive run_training — see ``_shutdown``)."""
        previous = self._previous_handlers = {}

        def request_stop(signum, frame):
            if self.stop_requested and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: now, mid-step (the last checkpoint stays)
            self.stop_requested, self.stop_signal = True, signum
            if signum == signal.SIGINT and self.dist.is_main:
                # os.write, not print: a handler may run inside tqdm's own write to stderr
                os.write(2, "\nstopping at the next step… (it saves a checkpoint; Ctrl-C again to stop "
                            "at once, without one)\n".encode())
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[sig] = signal.signal(sig, request_stop)
            except ValueError:  # not the main thread (a notebook thread): the stop file still works
                pass
        return previous

    def _restore_signal_handlers(self) -> None:
        previous, self._previous_handlers = getattr(self, "_previous_handlers", {}), {}
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def train(self) -> str:
        """Run to ``cfg.steps`` or a stop request; returns the final state ("finished" or "stopped")."""
        cfg, run = self.cfg, self.run if self.dist.is_main else None
        self._install_signal_handlers()
        writer = None
        if run is not None and cfg.tensorboard:
            # here, not at the top: importing tensorboard costs ~1 s and runs with tensorboard=False skip it
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run.tensorboard))
        if run is not None:
            kept = run.truncate_metrics(self.step)  # a resumed run re-logs what came after its checkpoint
            last_eval = next((r for r in reversed(kept) if r.get("split") == "eval"), {})
            run.write_status(state="running", pid=os.getpid(), step=self.step, steps=cfg.steps, error=None,
                             eval_loss=last_eval.get("loss"), eval_step=last_eval.get("step"),
                             resumed_from=getattr(self, "resumed_from", None), **self.meta)
        bar = None
        if self.progress and self.dist.is_main:
            bar = tqdm(total=cfg.steps, initial=self.step, unit="step", dynamic_ncols=True)
        if self.step == 0 and self.dist.is_main:
            self._eval_and_log(writer)
        state, first_step = "finished", self.step
        epoch, steps = None, []
        try:
            while self.step < cfg.steps:
                if self._stop_now():
                    state = "stopped"
                    break
                if self.stopped_early is not None:
                    break
                e, i = self.sampler.position(self.step)
                if e != epoch:
                    epoch, steps = e, self.sampler.epoch_steps(e)
                record = self.train_step(steps[i])
                self.step += 1
                record["epoch"], record["time"] = e, time.time()  # wall clock: throughput over any time window
                self._log(record, writer)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", cos=f"{record['cosine']:.3f}",
                                    concepts_s=f"{record['concepts_per_s']:.0f}")
                if run is not None:
                    run.write_status(step=self.step, loss=record["loss"], concepts_per_s=record["concepts_per_s"])
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.dist.is_main:
                    self._eval_and_log(writer)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.checkpoint()
            evaluated = cfg.eval_every and self.step % cfg.eval_every == 0
            if state == "finished" and self.dist.is_main and self.step > first_step and not evaluated:
                self._eval_and_log(writer)
            if run is not None:
                run.write_status(state="stopping" if state == "stopped" else "running")
            self.checkpoint()
            if self.dist.enabled:
                report = self.replica_report()
                if run is not None:
                    run.write_status(**report)
        finally:
            self._restore_signal_handlers()
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        if run is not None:
            if run.stop_file.exists():
                run.stop_file.unlink()
            summary = summarize_run(run.path)
            run.write_status(state=state, step=self.step, stopped_early=self.stopped_early is not None,
                             stop_reason=self.stopped_early, verdict=summary.verdict(),
                             beats_copy=summary.beats_copy, copy_cosine=summary.copy_cosine,
                             best_step=summary.best_step, best_eval_cosine=summary.best_eval_cosine,
                             best_checkpoint=str(run.best_checkpoint()) if run.best_checkpoint() else None)
        self._write_rank_log({"split": "end", "state": state, "step": self.step})  # where this rank stopped
        return state

    def _eval_and_log(self, writer) -> dict:
        record = self.evaluate()
        self._log(record, writer)
        self.after_eval(record)
        return record


def _reference_layout(writer) -> None:
    """TensorBoard "Custom Scalars": held-out cosine / top-1 / top-5 each on one chart with the copy and
    running-mean baselines as reference lines."""
    charts = {name: ["Multiline", [f"eval/{k}", f"eval/copy_{k}", f"eval/mean_{k}"]]
              for name, k in (("held-out cosine vs copy and mean", "cosine"),
                              ("held-out top-1 vs copy and mean", "top1"),
                              ("held-out top-5 vs copy and mean", "top5"))}
    writer.add_custom_scalars({"learned more than copying?": charts})


def _local_world_size(info: DistInfo) -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size if info.enabled else 1))


def run_training(cfg: TrainConfig, run_dir: str | Path | None = None, runs_dir: str | Path | None = None,
                 resume: bool = False, progress: bool = True) -> tuple[str, Path]:
    """Train in this process (one rank of torchrun when WORLD_SIZE > 1); returns (final state, run folder).

    ``run_dir``: an existing run folder (resume, or one made by start_run); else a new folder in ``runs_dir``.
    Rank 0 holds the run's lock for the whole run (``RunBusyError`` when another live process trains it).
    Everything is checked (data, device, the lock of an existing run) before a new folder is made, so a
    refused run leaves no folder behind. Ctrl-C stops at the next step boundary with a checkpoint and
    then raises KeyboardInterrupt; a second Ctrl-C raises it at once.
    """
    info = DistInfo.from_env()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and cfg.device in ("auto", "cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend)
    lock, trainer, ok = None, None, False
    try:
        path = [None]
        if info.is_main and run_dir is not None and RunDir(run_dir).config.is_file():
            lock = _take_lock(RunDir(run_dir))  # an existing run: refused at once if another process trains it
            path = [str(RunDir(run_dir).path)]
        if info.enabled:
            dist.broadcast_object_list(path, src=0)  # every rank agrees on the folder (resume reads it)
        try:
            # data, device, model (and the checkpoint to resume from): all before a new folder exists
            trainer = Trainer(cfg, RunDir(path[0]) if path[0] else None, resume=resume, dist_info=info,
                              progress=progress)
        except BaseException as e:
            if lock is not None and not resume:  # a folder start_run made for this process: say why it failed
                _record_failure(RunDir(path[0]), e)
            raise
        if lock is not None:
            lock.write_pid(os.getpid())  # checked: this process trains the run
        if info.is_main and path[0] is None:
            base = Path(runs_dir) if runs_dir is not None else default_runs_dir()
            new = RunDir(run_dir) if run_dir is not None else RunDir(base / new_run_name(cfg))
            new.create(cfg.to_dict())
            lock = RunLock(new.path).acquire()  # nobody else can hold a folder this process just made
            lock.write_pid(os.getpid())
            path = [str(new.path)]
        if info.enabled:
            dist.broadcast_object_list(path, src=0)
        run = trainer.run = RunDir(path[0])
        if info.is_main and progress:
            print(f"run folder: {run.path}", file=sys.stderr, flush=True)
        try:
            state = trainer.train()
        except KeyboardInterrupt:
            if info.is_main:  # a second Ctrl-C: the run is resumable from its last checkpoint
                run.write_status(state="stopped", interrupted=True, step=trainer.step,
                                 error="interrupted by a second Ctrl-C before its checkpoint")
            raise
        except BaseException as e:
            if info.is_main:
                _record_failure(run, e)
            raise
        ok = True
        if trainer.stop_signal == signal.SIGINT:
            raise KeyboardInterrupt  # stopped cleanly (checkpoint saved); the caller exits 130
        return state, run.path
    finally:
        _shutdown(info, trainer, clean=ok)
        del trainer
        if lock is not None:
            lock.release()


def _record_failure(run: RunDir, e: BaseException) -> None:
    run.write_status(state="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())


def _take_lock(run: RunDir) -> RunLock:
    """The run's lock: handed over by the launcher (start_run/resume_run) or taken here."""
    fd = os.environ.pop(LOCK_FD_ENV, None)
    lock = RunLock(run.path)
    return lock.adopt(int(fd)) if fd else lock.acquire()


def _shutdown(info: DistInfo, trainer: "Trainer | None", clean: bool) -> None:
    """Leave the process group in order: no DDP wrapper left holding it, every rank done, then destroy."""
    if not (info.enabled and dist.is_initialized()):
        return
    if trainer is not None:
        trainer._restore_signal_handlers()  # their closure would keep the Trainer (and DDP) alive to exit
        trainer.ddp = None  # the Reducer holds the ProcessGroup and its pending work
    gc.collect()
    if clean:
        dist.barrier()  # rank 0's last writes are done before any rank tears down
    dist.destroy_process_group()
