"""The packed VMMoE engine: leak-free packing, packed conv and scan, Mamba + MoE, leakage audit.

Importable without Panel. This file is the facade on top of every layer, so it imports none of them
at import time: every ``import model.<x>`` runs it first, and an eager import here would make the
lowest module (``model.segments``) pull in the whole engine and the concept store. Public names
resolve on first use instead (PEP 562 ``__getattr__``); the table below says where each one lives.
"""
from __future__ import annotations

import importlib

from model.version import __version__

_EXPORTS = {
    # segment layout
    "SegmentLayoutError": "model.segments",
    "SegmentIsolationError": "model.segments",
    "validate_segment_ids": "model.segments",
    # packing
    "pack_sequences": "model.packing",
    "plan_rows": "model.packing",
    "PackedBatch": "model.packing",
    "PackPlan": "model.packing",
    # packed operators and losses
    "causal_conv1d": "model.ops",
    "selective_scan": "model.ops",
    "concept_loss": "model.losses",
    "concept_metrics": "model.losses",
    "next_concept_targets": "model.losses",
    # model
    "VMMoEConfig": "model.config",
    "VMMoE": "model.vmmoe",
    "VMMoEOutput": "model.vmmoe",
    "InferenceCache": "model.vmmoe",
    "LeakyConfigWarning": "model.vmmoe",
    "RoutingStats": "model.moe",
    "Trace": "model.trace",
    # concept store
    "ConceptStore": "model.concepts",
    "open_default_store": "model.concepts",
    # leakage audit
    "audit": "model.leakage",
    "AuditReport": "model.leakage",
    "leaky_config": "model.leakage",
    # training and using a trained model
    "TrainConfig": "model.train",
    "Packing": "model.packing",
}

__all__ = sorted(_EXPORTS) + ["__version__"]
_SUBMODULES = {"segments", "packing", "ops", "config", "schema", "fileio", "device", "losses", "leakage", "trace",
               "concepts", "train", "infer"}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"model.{name}")
    raise AttributeError(f"module 'model' has no attribute {name!r}")
