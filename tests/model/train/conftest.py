"""Tiny, fast training settings shared by the training tests (synthetic data unless a test says otherwise)."""
import pytest

TINY_MODEL = {"d_model": 16, "n_layers": 1, "n_experts": 2, "top_k": 1, "d_state": 4, "d_concept": 32}


def tiny_config(**overrides) -> dict:
    cfg = {"data": "synthetic", "synthetic_docs": 60, "synthetic_mean_len": 20, "max_len": 48, "rows_per_step": 2,
           "model": dict(TINY_MODEL), "threads": 1, "warmup_steps": 2, "lr": 3e-3, "eval_every": 0,
           "checkpoint_every": 0, "tensorboard": False, "steps": 20}
    cfg.update(overrides)
    return cfg


@pytest.fixture
def tiny():
    return tiny_config
