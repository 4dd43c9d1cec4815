"""Forms built from the config schema: a widget per Spec type with the field's own bounds and choices,
tested on a small local dataclass declared with ``model.schema.setting``; the Training view's run form."""
from __future__ import annotations

from dataclasses import dataclass

import panel as pn
import pytest

from model.schema import setting, specs
from model.train import TrainConfig
from workbench.views.training import form as form_module
from workbench.views.training.form import MODEL_FIELDS, TRAIN_FIELDS, RunForm, SpecForm


@dataclass
class Toy:
    mode: str = setting("fast", "how to go", choices=("fast", "slow"))
    steps: int = setting(10, "how many steps", ge=1, le=100)
    warm: int = setting(3, "strictly positive, strictly below 9", gt=0, lt=9)
    lr: float = setting(1e-3, "peak learning rate", gt=0, lt=1)
    ratio: float = setting(0.5, "a share", ge=0, le=1)
    verbose: bool = setting(False, "say more")
    name: str = setting("", "a name", allowed_chars="-_.")
    seed: int | None = setting(None, "optional seed", optional=True, ge=0)
    extra: dict = setting(None, "not a form field", factory=dict)


def test_a_widget_per_spec_type_with_the_fields_own_rules():
    form = SpecForm(specs(Toy))
    w = form.widgets
    assert set(w) == {"mode", "steps", "warm", "lr", "ratio", "verbose", "name", "seed"}  # the dict is skipped
    assert isinstance(w["mode"], pn.widgets.Select) and list(w["mode"].options) == ["fast", "slow"]
    assert isinstance(w["steps"], pn.widgets.IntInput) and (w["steps"].start, w["steps"].end) == (1, 100)
    assert (w["warm"].start, w["warm"].end) == (1, 8)  # an int's strict bounds, made inclusive
    assert isinstance(w["lr"], pn.widgets.FloatInput) and (w["lr"].start, w["lr"].end) == (0, 1)
    assert isinstance(w["verbose"], pn.widgets.Checkbox) and isinstance(w["name"], pn.widgets.TextInput)
    assert w["lr"].description == "peak learning rate"  # the help is the tooltip
    assert form.to_dict() == {"mode": "fast", "steps": 10, "warm": 3, "lr": 1e-3, "ratio": 0.5, "verbose": False,
                              "name": "", "seed": None}


def test_the_values_hold_the_schemas_rules():
    form = SpecForm(specs(Toy), steps=5)
    assert form.values.steps == 5 and form.widgets["steps"].value == 5
    for name, bad in (("lr", 1.0), ("lr", 0.0), ("steps", 101), ("warm", 0), ("mode", "medium")):
        with pytest.raises(ValueError):
            setattr(form.values, name, bad)
    form.widgets["ratio"].value = 0.25  # a widget edit is the value
    assert form.values.ratio == 0.25
    form.values.seed = 7
    assert form.attrs["name"] == "name_"  # every Parameterized has a "name" of its own
    form.set("name", "a b")  # a String takes it; the field's spec refuses it, naming the field
    with pytest.raises(ValueError, match="name="):
        form.checked()


def test_fields_starting_values_and_offers():
    form = SpecForm(specs(Toy), {"steps": "step count", "name": "run name"}, start={"steps": 20},
                    offer={"name": ("alpha", "beta")})
    assert list(form.widgets) == ["steps", "name"] and form.widgets["steps"].label == "step count"
    assert form.values.steps == 20 and list(form.widgets["name"].options) == ["", "alpha", "beta"]
    with pytest.raises(ValueError):
        SpecForm(specs(Toy), {"name": "n"}, offer={"name": ("no spaces allowed",)})
    with pytest.raises(KeyError, match="nope"):
        SpecForm(specs(Toy), {"nope": "x"})
    with pytest.raises(TypeError, match="colour"):
        SpecForm(specs(Toy), colour=3)


def test_the_run_form_is_built_from_the_train_schema():
    form = RunForm(steps=4, d_model=16)
    assert list(form.train.widgets) == list(TRAIN_FIELDS) and list(form.model.widgets) == list(MODEL_FIELDS)
    lr = next(s for s in form_module.train_specs() if s.name == "lr")
    assert (form.train.widgets["lr"].start, form.train.widgets["lr"].end) == (lr.gt, lr.lt)  # the schema's bounds
    cfg = form.train_config()
    assert cfg["steps"] == 4 and cfg["model"]["d_model"] == 16 and cfg["data"] == "default"
    TrainConfig.from_dict(cfg)  # what the form describes is a valid run
    # a device this machine cannot use is disabled in the form, with the reason beside it
    from model.device import cuda_available, mps_available
    unusable = [d for d, ok in (("mps", mps_available()), ("cuda", cuda_available())) if not ok]
    assert set(unusable) <= set(form.train.widgets["device"].disabled_options)
    for d in unusable:
        assert f'"{d}" is disabled' in form.device_label.object
    # the first input box of the form is the step count (Selects draw no <input>): the browser test types there
    first = next(w for w in form.train.widgets.values() if not isinstance(w, (pn.widgets.Select, pn.widgets.TextInput)))
    assert first is form.train.widgets["steps"]


def test_the_form_follows_whatever_the_schema_declares(monkeypatch):
    """A bound or a choice changed in the schema changes the form: nothing is restated in the view."""
    @dataclass
    class Declared:
        data: str = setting("default", "data")
        packing: str = setting("packed", "packing", choices=("packed", "padded"))
        loss: str = setting("cosine", "loss", choices=("cosine",))
        device: str = setting("auto", "device", choices=("auto", "cpu"))
        steps: int = setting(500, "steps", ge=1)
        max_len: int = setting(256, "row length", ge=2)
        rows_per_step: int = setting(8, "rows", ge=1)
        lr: float = setting(1e-3, "lr", gt=0, lt=0.25)
        eval_every: int = setting(50, "eval", ge=0)
        checkpoint_every: int = setting(100, "ckpt", ge=0)

    monkeypatch.setattr(form_module, "TrainConfig", Declared)
    form = RunForm()
    assert form.train.widgets["lr"].end == 0.25 and list(form.train.widgets["packing"].options) == ["packed", "padded"]
