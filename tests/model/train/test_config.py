"""TrainConfig: strict parsing from dicts, JSON and TOML, refused before anything starts."""
import json

import pytest

from model.train import TrainConfig, start_run


def test_defaults_are_packed_and_valid():
    cfg = TrainConfig.from_dict({})
    assert cfg.packing == "packed" and cfg.isolate_segments


def test_toml_and_json_files_give_the_same_config(tmp_path):
    (tmp_path / "a.toml").write_text('steps = 7\npacking = "padded"\nlr = 0.002\n[model]\nd_model = 32\n')
    (tmp_path / "a.json").write_text(json.dumps({"steps": 7, "packing": "padded", "lr": 0.002,
                                                 "model": {"d_model": 32}}))
    assert TrainConfig.from_file(tmp_path / "a.toml") == TrainConfig.from_file(tmp_path / "a.json")


@pytest.mark.parametrize("bad, match", [
    ({"stepz": 3}, "unknown train config key.*stepz"),
    ({"steps": 0}, "steps=0"),
    ({"steps": "10"}, "steps='10': expected int"),
    ({"lr": 2.0}, "lr=2.0"),
    ({"packing": "leaky"}, "packing='leaky'"),
    ({"loss": "l1"}, "loss='l1'"),
    ({"eval_fraction": 1.0}, "eval_fraction"),
    ({"tensorboard": 1}, "tensorboard=1"),
    ({"device": "tpu"}, "device='tpu'"),
    ({"name": "../x"}, "name="),
    ({"model": {"n_layrs": 2}}, "model: unknown VMMoEConfig key.*n_layrs"),
    ({"model": {"top_k": 9, "n_experts": 4}}, "model: top_k=9"),
    ({"model": {"isolate_segments": False}}, "packed-leaky"),
])
def test_bad_key_or_value_is_named(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_dict(bad)


def test_bad_file_is_refused(tmp_path):
    (tmp_path / "c.toml").write_text("steps = \n")
    with pytest.raises(ValueError, match="not valid TOML"):
        TrainConfig.from_file(tmp_path / "c.toml")
    (tmp_path / "c.yaml").write_text("steps: 3\n")
    with pytest.raises(ValueError, match=".json or .toml"):
        TrainConfig.from_file(tmp_path / "c.yaml")


def test_start_run_refuses_a_bad_config_before_making_a_folder(tmp_path):
    with pytest.raises(ValueError, match="rows_per_step"):
        start_run({"rows_per_step": -1}, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
