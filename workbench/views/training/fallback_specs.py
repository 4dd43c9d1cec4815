"""Fallback field specs for the run form, used only while ``model.schema.specs(TrainConfig)`` (or
``specs(VMMoEConfig)``) is empty.

This module goes when the schema lands: once the configs declare their fields with
``model.schema.setting``, ``form.train_specs()``/``form.model_specs()`` read them and this file and its
two uses in ``form.py`` are deleted. Until then it states the rules of today's validators
(``TrainConfig.validate``, ``VMMoEConfig.__post_init__``), so the form refuses what a run would refuse.
"""
from __future__ import annotations

from model.device import DEVICES
from model.schema import Spec
from model.train.config import LOSSES, PACKINGS

TRAIN = [
    Spec("data", str, "default", "'default' (the default concept store), 'synthetic', or a store folder"),
    Spec("packing", str, "packed", "how a step's rows are laid out", choices=PACKINGS),
    Spec("loss", str, "cosine", "next-concept loss", choices=LOSSES),
    Spec("device", str, "auto", "where the run trains", choices=DEVICES),
    Spec("steps", int, 500, "optimizer steps", ge=1),
    Spec("max_len", int, 256, "row length; longer documents are cut into pieces of at most max_len", ge=2),
    Spec("rows_per_step", int, 8, "packed rows per optimizer step", ge=1),
    Spec("lr", float, 1e-3, "peak learning rate", gt=0, lt=1),
    Spec("eval_every", int, 50, "steps between evaluations; 0: only at the start and the end", ge=0),
    Spec("checkpoint_every", int, 100, "steps between checkpoints; 0: only when stopping or finishing", ge=0),
]

MODEL = [
    Spec("d_model", int, 256, "residual stream width", ge=1),
    Spec("n_layers", int, 4, "Mamba + MoE blocks", ge=1),
    Spec("n_experts", int, 8, "experts per MoE layer", ge=1),
]
