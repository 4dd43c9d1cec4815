"""TrainConfig: everything one training run needs, checked before anything starts.

A config is a JSON or TOML file (or a dict) with the keys below; an unknown key or a bad value is a
``ValueError`` naming it. ``model`` holds ``VMMoEConfig`` keys (``d_concept`` defaults to the data's
vector size).
"""
from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

PACKINGS = ("packed", "padded", "single", "packed-leaky")
LOSSES = ("cosine", "mse", "infonce")
STRATEGIES = ("bfd", "ffd")


@dataclass
class TrainConfig:
    # what to train
    model: dict = field(default_factory=dict)  # VMMoEConfig overrides
    data: str = "default"        # "default" (the default concept store), "synthetic", or a store folder
    synthetic_docs: int = 300    # data="synthetic": number of documents ...
    synthetic_mean_len: int = 55  # ... and their mean length (concepts)
    min_len: int = 2             # shorter documents carry no next-concept target
    eval_fraction: float = 0.1   # share of *documents* held out for evaluation
    eval_max_sequences: int = 512
    # how to lay out a step
    packing: str = "packed"      # "packed" (default), "padded", "single" (baselines), "packed-leaky" (demo only)
    strategy: str = "bfd"
    max_len: int = 256           # row length; longer documents are cut into pieces of at most max_len
    rows_per_step: int = 8       # packed rows per optimizer step (per process under DDP)
    # optimisation
    steps: int = 500
    lr: float = 1e-3
    min_lr_ratio: float = 0.1    # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 20
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0       # max global grad norm; 0 turns clipping off
    loss: str = "cosine"
    temperature: float = 0.05    # infonce only
    seed: int = 0
    # where and how
    device: str = "auto"
    precision: str = "auto"
    threads: int = 0             # torch CPU threads; 0 keeps torch's default
    eval_every: int = 50         # 0: evaluate only at the start and the end
    checkpoint_every: int = 100  # 0: checkpoint only when stopping or finishing
    keep_checkpoints: int = 3
    tensorboard: bool = True
    name: str = ""               # run folder name; "" -> "<time>-<packing>"

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Build and validate; unknown keys and bad values raise ValueError naming them."""
        if not isinstance(d, dict):
            raise ValueError(f"a train config must be a mapping, got {type(d).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown train config key(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        kwargs = {}
        for key, value in d.items():
            kwargs[key] = _coerce(key, value, _field_type(cls, key))
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """Read a ``.json`` or ``.toml`` file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"train config {str(path)!r} does not exist")
        text = path.read_text()
        try:
            if path.suffix == ".toml":
                d = tomllib.loads(text)
            elif path.suffix == ".json":
                d = json.loads(text)
            else:
                raise ValueError(f"train config {str(path)!r}: expected a .json or .toml file")
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"train config {str(path)!r} is not valid {path.suffix[1:].upper()}: {e}") from e
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def isolate_segments(self) -> bool:
        return self.packing != "packed-leaky"

    def model_config(self, d_concept: int):
        """The VMMoEConfig for this run: ``model`` overrides, the data's d_concept, resets per packing."""
        from model.config import VMMoEConfig

        d = dict(self.model)
        if "d_concept" in d and d["d_concept"] != d_concept:
            raise ValueError(f"model.d_concept={d['d_concept']} but the data's vectors have {d_concept} dimensions")
        if "isolate_segments" in d and d["isolate_segments"] != self.isolate_segments:
            raise ValueError("model.isolate_segments is set by packing: use packing='packed-leaky' for a leaky model")
        d["d_concept"] = d_concept
        d["isolate_segments"] = self.isolate_segments
        return VMMoEConfig.from_dict(d)

    def validate(self) -> None:
        def need(ok: bool, key: str, what: str):
            if not ok:
                raise ValueError(f"train config {key}={getattr(self, key)!r}: {what}")

        need(self.packing in PACKINGS, "packing", f"must be one of {PACKINGS}")
        need(self.loss in LOSSES, "loss", f"must be one of {LOSSES}")
        need(self.strategy in STRATEGIES, "strategy", f"must be one of {STRATEGIES}")
        need(self.data in ("default", "synthetic") or bool(self.data), "data",
             "must be 'default', 'synthetic' or a concept-store folder")
        for key in ("max_len", "rows_per_step", "steps", "synthetic_docs", "synthetic_mean_len", "keep_checkpoints",
                    "eval_max_sequences"):
            need(getattr(self, key) >= 1, key, "must be >= 1")
        need(self.min_len >= 2, "min_len", "must be >= 2 (a sequence needs a next concept)")
        need(self.max_len >= self.min_len, "max_len", "must be >= min_len")
        for key in ("warmup_steps", "eval_every", "checkpoint_every", "threads", "seed", "weight_decay", "grad_clip"):
            need(getattr(self, key) >= 0, key, "must be >= 0")
        need(0 < self.eval_fraction < 1, "eval_fraction", "must be in (0, 1)")
        need(0 < self.lr < 1, "lr", "must be in (0, 1)")
        need(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must be in [0, 1]")
        need(0 <= self.beta1 < 1, "beta1", "must be in [0, 1)")
        need(0 <= self.beta2 < 1, "beta2", "must be in [0, 1)")
        need(self.temperature > 0, "temperature", "must be > 0")
        need(all(c.isalnum() or c in "-_." for c in self.name), "name", "may hold only letters, digits, '-', '_', '.'")
        from model.device import DEVICES, PRECISIONS

        need(self.device.split(":", 1)[0] in DEVICES, "device", f"must be one of {DEVICES}")
        need(self.precision in PRECISIONS, "precision", f"must be one of {PRECISIONS}")
        # The model part is checked by VMMoEConfig itself (unknown keys and bad values named there).
        if self.model:
            try:
                self.model_config(self.model.get("d_concept", 384))
            except ValueError as e:
                raise ValueError(f"train config model: {e}") from e


def _field_type(cls, key: str) -> type:
    hints = {"model": dict, "data": str, "packing": str, "strategy": str, "loss": str, "device": str,
             "precision": str, "name": str, "tensorboard": bool}
    if key in hints:
        return hints[key]
    default = next(f.default for f in dataclasses.fields(cls) if f.name == key)
    return type(default)


def _coerce(key: str, value, kind: type):
    """Accept ints for float fields; refuse everything else that is not the field's type."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is bool and not isinstance(value, bool) or kind is not bool and isinstance(value, bool):
        raise ValueError(f"train config {key}={value!r}: expected {kind.__name__}")
    if not isinstance(value, kind):
        raise ValueError(f"train config {key}={value!r}: expected {kind.__name__}, got {type(value).__name__}")
    if kind is float and not math.isfinite(value):
        raise ValueError(f"train config {key}={value!r}: must be finite")
    return value
