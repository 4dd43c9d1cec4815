"""The packed VMMoE engine: leak-free packing, packed conv and scan, Mamba + MoE, leakage audit.

Importable without Panel. Public names are imported lazily so that ``import model`` stays cheap
(the concept store pulls in sentence-transformers only when it is used).
"""
from __future__ import annotations

import importlib

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
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in {"leakage", "losses", "ops", "concepts", "packing", "segments", "trace", "train", "infer", "device"}:
        return importlib.import_module(f"model.{name}")
    raise AttributeError(f"module 'model' has no attribute {name!r}")
