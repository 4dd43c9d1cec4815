"""Using a trained VMMoE: packed batch inference, recurrent step inference, generation, A/B evaluation.

- ``packed_inference(model, seqs)``: many sequences packed into rows, one forward per group of rows,
  unpacked back; equal to running each sequence alone (the model resets at segment starts).
- ``step_inference(model, values, segment_ids)``: the same predictions one position at a time with an
  explicit state cache (``model.allocate_cache``), reset at every segment start.
- ``generate(model, store, context_ids, n)``: read a context of concepts, then predict the next concept
  n times, each decoded to its nearest store sentences; stops when a prediction repeats the previous one.
- ``evaluate_sequences`` / ``compare_checkpoints`` live in ``model.train.evaluate`` (evaluation needs a
  run's data and checkpoints); they are re-exported here, where a user of a trained model looks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from model.packing import pack_sequences
from model.segments import segment_starts, validate_segment_ids
from model.train.evaluate import compare_checkpoints, evaluate_sequences

__all__ = ["packed_inference", "one_by_one", "step_inference", "generate", "GeneratedStep", "evaluate_sequences",
           "compare_checkpoints"]


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def packed_inference(model, sequences: list[torch.Tensor], max_len: int | None = None, rows_per_step: int = 16,
                     mode: str = "packed", strategy: str = "bfd") -> list[torch.Tensor]:
    """Predictions for each sequence, in input order: list of (len_i, d_concept) float32 on the CPU.

    ``sequences``: list of (len_i, d_concept) tensors. ``max_len`` (default: the longest sequence) is the
    row length; a longer sequence is cut into chunks, each starting from a zero state.
    ``mode`` "packed" (rows with resets) or "padded" (one sequence per row).
    """
    if mode not in ("packed", "padded"):
        raise ValueError(f"mode must be 'packed' or 'padded', got {mode!r}")
    if not sequences:
        raise ValueError("packed_inference needs at least one sequence")
    max_len = max_len or max(int(s.shape[0]) for s in sequences)
    model.eval()
    device = _model_device(model)
    batch = pack_sequences([s.float() for s in sequences], max_len, mode=mode, strategy=strategy)
    preds = []
    for start in range(0, batch.values.shape[0], rows_per_step):  # rows in order, so unpack sees the full layout
        values = batch.values[start:start + rows_per_step].to(device)
        seg = batch.segment_ids[start:start + rows_per_step].to(device)
        preds.append(model(values, seg).prediction.float().cpu())
    return batch.unpack(torch.cat(preds))


@torch.no_grad()
def one_by_one(model, sequences: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each sequence alone, as a batch of one: the reference packed inference must equal."""
    model.eval()
    device = _model_device(model)
    return [model(s.float()[None].to(device)).prediction[0].float().cpu() for s in sequences]


@torch.no_grad()
def step_inference(model, values: torch.Tensor, segment_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The parallel forward's prediction computed one position at a time with a recurrent state cache.

    values (rows, L, d_concept), segment_ids (rows, L) (None: one segment per row). At each segment start
    the row's cache is reset; padding positions give 0. Returns (rows, L, d_concept) float32.
    """
    model.eval()
    device = _model_device(model)
    rows, L, _ = values.shape
    if segment_ids is None:
        segment_ids = torch.zeros(rows, L, dtype=torch.long)
    validate_segment_ids(segment_ids, rows, L)
    values, segment_ids = values.to(device), segment_ids.to(device)
    starts, real = segment_starts(segment_ids), segment_ids >= 0
    cache = model.allocate_cache(rows, device=device)
    out = torch.zeros(rows, L, model.config.d_concept, device=device)
    for t in range(L):
        # x_t : (rows, d_concept)
        if starts[:, t].any():
            cache.reset(starts[:, t])
        out[:, t] = model.step(values[:, t], cache).float() * real[:, t, None]
    return out.cpu()


@dataclass
class GeneratedStep:
    """One generated concept: the predicted vector and its nearest store sentences (with cosine scores)."""
    index: int                                  # 0 = first concept after the context
    vector: torch.Tensor                        # (d_concept,) the unit-normalised prediction
    neighbours: list = field(default_factory=list)  # [(Sentence, score)], best first
    cosine_to_previous: float | None = None     # to the previous prediction (None for the first)

    @property
    def text(self) -> str:
        return self.neighbours[0][0].text if self.neighbours else ""


@torch.no_grad()
def generate(model, store, context_ids: list[int], n: int, k: int = 3, repeat_threshold: float = 0.98,
             feed: str = "prediction", no_repeat: bool = False) -> list[GeneratedStep]:
    """Predict up to ``n`` next concepts after the context and decode each to its ``k`` nearest sentences.

    The context (store sentence ids, in order) runs through the recurrent step mode; then each
    prediction is fed back (``feed="prediction"``: the normalised predicted vector; ``"nearest"``: the
    vector of its nearest sentence). Generation stops early when a prediction's cosine to the previous
    prediction exceeds ``repeat_threshold`` (the model is repeating itself); that repeat is not returned.

    ``no_repeat=True`` decodes what a reader sees: each step becomes the nearest store sentence that is
    neither in the context nor already generated (by id or by text), that sentence's vector is fed back
    (as with ``feed="nearest"``), and there is no early stop: the continuation never repeats a sentence,
    so a greedy rollout that would circle back to its last sentence moves on to the next-nearest one.
    ``neighbours`` then holds only such sentences (the first is the step's sentence).
    """
    if not context_ids:
        raise ValueError("generate needs at least one context sentence id")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if feed not in ("prediction", "nearest"):
        raise ValueError(f"feed must be 'prediction' or 'nearest', got {feed!r}")
    model.eval()
    device = _model_device(model)
    context = torch.as_tensor(store.vectors(list(context_ids)), dtype=torch.float32, device=device)
    if context.shape[0] != len(context_ids):
        raise ValueError(f"context ids {list(context_ids)} do not all have vectors in the store")
    cache = model.allocate_cache(1, device=device)
    for x in context:
        pred = model.step(x[None], cache)[0]
    steps: list[GeneratedStep] = []
    prev = None
    used_ids = {int(i) for i in context_ids}
    used_texts = {s.text.strip() for s in store.sentences(ids=list(used_ids))} if no_repeat else set()
    for i in range(n):
        vec = F.normalize(pred.float(), dim=-1)
        cos_prev = float(vec @ prev) if prev is not None else None
        if not no_repeat and cos_prev is not None and cos_prev > repeat_threshold:
            break
        if no_repeat:
            neighbours = _unused_neighbours(store, vec.cpu().numpy(), k, used_ids, used_texts)
            if not neighbours:
                break  # every sentence of the store was used
            used_ids.add(neighbours[0][0].id)
            used_texts.add(neighbours[0][0].text.strip())
        else:
            neighbours = store.search(vec.cpu().numpy(), k)
        steps.append(GeneratedStep(i, vec.cpu(), [(s, float(score)) for s, score in neighbours], cos_prev))
        prev = vec
        if (feed == "nearest" or no_repeat) and neighbours:
            nxt = torch.as_tensor(store.vectors([neighbours[0][0].id]), dtype=torch.float32, device=device)[0]
        else:
            nxt = vec
        pred = model.step(nxt[None].to(device), cache)[0]
    return steps


def _unused_neighbours(store, vec, k: int, used_ids: set, used_texts: set) -> list:
    """The ``k`` nearest store sentences whose id and text are not used yet (searching wider until found)."""
    want = k + len(used_ids)
    while True:
        hits = store.search(vec, want)
        fresh = [(s, score) for s, score in hits if s.id not in used_ids and s.text.strip() not in used_texts]
        if len(fresh) >= k or len(hits) < want:
            return fresh[:k]
        want *= 2
