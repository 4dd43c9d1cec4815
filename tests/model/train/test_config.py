"""TrainConfig: strict parsing from dicts, JSON and TOML, refused before anything starts; the schema forms use."""
import importlib
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


def test_packing_modes_own_their_layout_and_isolation():
    from model.packing import MODES, Packing

    assert [m.value for m in Packing] == ["packed", "padded", "single", "packed-leaky"]
    assert {m.layout for m in Packing} <= set(MODES)
    assert [m for m in Packing if not m.isolates] == [Packing.PACKED_LEAKY]
    assert Packing.PACKED_LEAKY.layout == "packed" and Packing.SINGLE.eval_layout == "padded"
    assert not TrainConfig(packing="packed-leaky").isolate_segments


def test_the_schema_is_what_a_form_needs():
    from model import schema

    fields = {s.name: s for s in TrainConfig.form_fields()}
    assert "model" not in fields and "model.d_model" in fields
    assert "model.d_concept" not in fields and "model.isolate_segments" not in fields  # set by the data / packing
    assert fields["packing"].kind == "choice" and fields["packing"].choices == ("packed", "padded", "single",
                                                                                 "packed-leaky")
    assert (fields["lr"].gt, fields["lr"].lt, fields["lr"].kind) == (0, 1, "float")
    assert fields["tensorboard"].kind == "bool" and fields["model.d_model"].group == "model"
    assert all(s.help for s in fields.values())
    assert list(schema.groups(TrainConfig)) == ["model", "data", "layout", "optimisation", "run"]
    with pytest.raises(ValueError, match="lr=1"):  # the bound the form shows is the bound that is checked
        TrainConfig.from_form({"lr": 1})
    assert TrainConfig.from_form({"warmup_steps": 0, "weight_decay": 0}).weight_decay == 0.0  # int -> float
    assert TrainConfig.from_form({"steps": 5, "model.d_model": 32}) == TrainConfig(steps=5, model={"d_model": 32})


def test_scan_backend_choices_come_from_the_ops_registry(monkeypatch):
    from model import schema
    from model.config import VMMoEConfig
    ss = importlib.import_module("model.ops.selective_scan")  # the module (model.ops.selective_scan is the function)

    with pytest.raises(ValueError, match="scan_backend='fused'"):
        VMMoEConfig(scan_backend="fused")
    monkeypatch.setitem(ss._BACKENDS, "fused", ss.ScanBackend("fused", ss.available_backends()["reference"].fn, True))
    assert VMMoEConfig(scan_backend="fused").scan_backend == "fused"
    assert "fused" in schema.spec(VMMoEConfig, "scan_backend").choices
