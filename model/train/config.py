"""TrainConfig: everything one training run needs, checked before anything starts.

A config is a JSON or TOML file (or a dict) with the keys below; an unknown key or a bad value is a
``ValueError`` naming it. ``model`` holds ``VMMoEConfig`` keys (``d_concept`` defaults to the data's
vector size; ``isolate_segments`` follows ``packing``).

Every key is declared once, with ``model.schema.setting``: its help, bounds and choices live on the
field, and the allowed values come from where they are defined (packing modes and strategies from
``model.packing``, loss kinds from ``model.losses``, devices and precisions from ``model.device``).
``vmmoe train --help`` and the workbench's run form are built from the same declarations:

    schema.specs(TrainConfig)        # one Spec per key (name, type, default, help, choices, bounds, group)
    TrainConfig.form_fields()        # what a run form shows: the TrainConfig keys, then "model.<key>"
    TrainConfig.from_form(values)    # {"steps": 50, "model.d_model": 64, ...} -> a checked TrainConfig
"""
from __future__ import annotations

import dataclasses
import json
import tomllib  # Python >= 3.11 (pyproject's floor)
from dataclasses import dataclass
from pathlib import Path

from model import schema
from model.config import VMMoEConfig
from model.device import DEVICES, PRECISIONS
from model.losses import KINDS as LOSS_KINDS
from model.packing import STRATEGIES, Packing
from model.schema import Spec, setting

OWNER = "train config"  # how error messages name a TrainConfig
# VMMoEConfig keys a run does not take from its config: the data sets one, the packing mode the other
MODEL_KEYS_SET_BY_RUN = ("d_concept", "isolate_segments")
# The training recipe's model settings (model/train/README.md, "recipe"): a run's model starts from these,
# its ``model`` table overrides them. VMMoEConfig's own defaults stay the bare architecture.
RECIPE_MODEL = {"residual_prediction": True, "dropout": 0.1}


@dataclass
class TrainConfig:
    # what to train
    model: dict = setting(None, "VMMoEConfig overrides (a [model] table in TOML)", factory=dict, group="model")
    data: str = setting("default", "'default' (the default concept store), 'synthetic', or a concept-store folder",
                        group="data")
    synthetic_docs: int = setting(300, "data='synthetic': number of documents", ge=1, group="data")
    synthetic_mean_len: int = setting(55, "data='synthetic': mean document length (concepts)", ge=1, group="data")
    min_len: int = setting(2, "shorter documents are dropped (a sequence needs a next concept)", ge=2, group="data")
    eval_fraction: float = setting(0.1, "share of *documents* held out for evaluation", gt=0, lt=1, group="data")
    eval_max_sequences: int = setting(512, "at most this many held-out sequences are evaluated", ge=1, group="data")
    # how to lay out a step
    packing: str = setting("packed", "step layout: packed (rows with resets), padded / single (baselines), "
                                     "packed-leaky (resets off: demos and audits only)", choices=Packing, group="layout")
    strategy: str = setting("bfd", "row planner: best-fit or first-fit decreasing", choices=STRATEGIES, group="layout")
    max_len: int = setting(256, "row length; longer documents are cut into pieces of at most max_len", ge=1,
                           group="layout")
    rows_per_step: int = setting(8, "packed rows per optimizer step (per process under DDP)", ge=1, group="layout")
    # optimisation
    steps: int = setting(800, "optimizer steps (early stopping usually ends a run on real text sooner)", ge=1,
                         group="optimisation")
    lr: float = setting(1e-3, "peak learning rate (AdamW)", gt=0, lt=1, group="optimisation")
    min_lr_ratio: float = setting(0.1, "cosine decay ends at lr * min_lr_ratio", ge=0, le=1, group="optimisation")
    warmup_steps: int = setting(20, "linear warm-up steps", ge=0, group="optimisation")
    weight_decay: float = setting(0.01, "AdamW weight decay (matrices only)", ge=0, group="optimisation")
    beta1: float = setting(0.9, "AdamW beta1", ge=0, lt=1, group="optimisation")
    beta2: float = setting(0.95, "AdamW beta2", ge=0, lt=1, group="optimisation")
    grad_clip: float = setting(1.0, "max global grad norm; 0 turns clipping off", ge=0, group="optimisation")
    loss: str = setting("cosine", "next-concept loss", choices=LOSS_KINDS, group="optimisation")
    nce_weight: float = setting(0.0, "retrieval term: loss + nce_weight * InfoNCE against the step's other targets "
                                     "(the current concept among them); loss 'cosine' or 'mse'", ge=0,
                                group="optimisation")
    nce_unseen: bool = setting(False, "nce_weight > 0: leave out of the InfoNCE negatives what a position's segment "
                                      "already showed (its current concept and before), as the *_unseen top-k do",
                               group="optimisation")
    temperature: float = setting(0.05, "InfoNCE temperature (loss='infonce', or nce_weight > 0)", gt=0,
                                 group="optimisation")
    seed: int = setting(0, "seed of weights, data order and held-out split", ge=0, group="optimisation")
    # where and how
    device: str = setting("auto", "auto (MPS, else CUDA, else CPU), or one device ('cuda:1' names a card)",
                          choices=DEVICES, choice_key=lambda v: v.split(":", 1)[0], group="run")
    precision: str = setting("auto", "compute dtype; auto = bf16 autocast on CUDA cards that support it, else fp32",
                             choices=PRECISIONS, group="run")
    threads: int = setting(0, "torch CPU threads; 0 keeps torch's default", ge=0, group="run")
    eval_every: int = setting(25, "evaluate every N steps; 0: only at the start and the end", ge=0, group="run")
    early_stopping_patience: int = setting(4, "stop after this many evaluations in a row without a lower held-out "
                                              "loss (the run ends 'finished', stopped_early); 0 = off", ge=0,
                                           group="run")
    checkpoint_every: int = setting(100, "checkpoint every N steps; 0: only when stopping or finishing", ge=0,
                                    group="run")
    keep_checkpoints: int = setting(3, "newest checkpoints kept", ge=1, group="run")
    tensorboard: bool = setting(True, "write TensorBoard event files (tb/)", group="run")
    name: str = setting("", "run folder name; '' -> '<time>-<packing>'", allowed_chars="-_.", group="run")
    tags: str = setting("", "comma-separated labels of the run (shown in the runs tables)", group="run")

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build and validate; unknown keys and bad values raise ValueError naming them."""
        return schema.from_mapping(cls, d, owner=OWNER)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
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
    def packing_mode(self) -> Packing:
        """``packing`` as the enum that knows its row layout and whether it isolates segments."""
        return Packing(self.packing)

    @property
    def isolate_segments(self) -> bool:
        return self.packing_mode.isolates

    def model_config(self, d_concept: int) -> VMMoEConfig:
        """The VMMoEConfig for this run: ``model`` overrides, the data's d_concept, resets per packing."""
        d = {**RECIPE_MODEL, **self.model}
        if "d_concept" in d and d["d_concept"] != d_concept:
            raise ValueError(f"model.d_concept={d['d_concept']} but the data's vectors have {d_concept} dimensions")
        if "isolate_segments" in d and d["isolate_segments"] != self.isolate_segments:
            raise ValueError("model.isolate_segments is set by packing: use "
                             f"packing={Packing.PACKED_LEAKY.value!r} for a leaky model")
        d["d_concept"] = d_concept
        d["isolate_segments"] = self.isolate_segments
        return VMMoEConfig.from_dict(d)

    def validate(self) -> None:
        """Each key against its declared rules (coercing ints to floats), then the rules between keys."""
        schema.check(self, OWNER)

        def need(ok: bool, key: str, what: str):
            if not ok:
                raise ValueError(f"{OWNER} {key}={getattr(self, key)!r}: {what}")

        need(bool(self.data), "data", "must be 'default', 'synthetic' or a concept-store folder")
        need(self.max_len >= self.min_len, "max_len", "must be >= min_len")
        need(not (self.nce_weight and self.loss == "infonce"), "nce_weight",
             "adds InfoNCE to loss 'cosine' or 'mse'; loss 'infonce' is InfoNCE alone (set nce_weight = 0)")
        # The model part is checked by VMMoEConfig itself (unknown keys and bad values named there).
        if self.model:
            try:
                self.model_config(self.model.get("d_concept", 384))
            except ValueError as e:
                raise ValueError(f"{OWNER} model: {e}") from e

    # --- what a run form needs ---------------------------------------------------------------

    @classmethod
    def form_fields(cls) -> list[Spec]:
        """The fields of a run form, in order: every TrainConfig key but ``model``, then the VMMoEConfig
        keys a run may set, named ``"model.<key>"`` (group "model"). Each ``Spec`` carries the widget kind,
        default, choices, bounds and help; ``from_form`` takes the values back."""
        own = [s for s in schema.specs(cls) if s.name != "model"]
        model = [dataclasses.replace(s, name=f"model.{s.name}", group="model", default=RECIPE_MODEL.get(s.name, s.default))
                 for s in schema.specs(VMMoEConfig) if s.name not in MODEL_KEYS_SET_BY_RUN]
        return own + model

    @classmethod
    def from_form(cls, values: dict) -> TrainConfig:
        """A checked TrainConfig from a form's values (keys as ``form_fields`` names them; missing = default)."""
        d: dict = {}
        model: dict = {}
        for key, value in values.items():
            if key.startswith("model."):
                model[key.removeprefix("model.")] = value
            else:
                d[key] = value
        if model:
            d["model"] = {**d.get("model", {}), **model}
        return cls.from_dict(d)


def config_help() -> str:
    """The keys of a train config, group by group, one line each: the epilog of ``vmmoe train --help``."""
    lines = ["config keys (.toml / .json):"]
    for group, items in schema.groups(TrainConfig).items():
        if group == "model":
            continue  # its keys are listed below, as the table they are
        lines.append(f"  {group}:")
        for s in items:
            lines.append(f"    {s.name:20} {s.describe()}")
    lines.append("  [model] table (VMMoEConfig; d_concept comes from the data, isolate_segments from packing):")
    for s in schema.specs(VMMoEConfig):
        if s.name not in MODEL_KEYS_SET_BY_RUN:
            s = dataclasses.replace(s, default=RECIPE_MODEL.get(s.name, s.default))
            lines.append(f"    {s.name:20} {s.describe()}")
    return "\n".join(lines)
