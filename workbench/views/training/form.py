"""Forms built from the config schema: one parameter (the state) and one widget (the view) per ``Spec``.

``SpecForm(specs)`` turns each ``model.schema.Spec`` into a ``param`` parameter carrying the field's
rules (a ``Selector`` over its choices, an ``Integer``/``Number`` with its bounds, a ``Boolean``, a
``String``; the help text as the tooltip) and draws it with the matching Panel widget (``Select``,
bounded ``IntInput``/``FloatInput``, ``Checkbox``, ``TextInput``). A bound or a choice changes in the
schema and the form follows; the form never states a rule of its own.

``RunForm`` is the Training view's form: the ``TrainConfig`` fields a run is started with and the
``VMMoEConfig`` sizes of its model, and the device line that shows what "auto" resolves to.
"""
from __future__ import annotations

import math

import panel as pn
import param

from model.config import VMMoEConfig
from model.device import resolve_device
from model.schema import Spec, specs
from model.train import TrainConfig
from workbench import services

# The fields the run form shows, in this order, with their labels.
TRAIN_FIELDS = {"data": "data", "packing": "packing", "loss": "loss", "device": "device", "steps": "steps",
                "max_len": "max_len (row length)", "rows_per_step": "rows per step", "lr": "learning rate",
                "eval_every": "evaluate every (steps)", "checkpoint_every": "checkpoint every (steps)",
                "name": "run name ('' = time and packing)", "tags": "tags (comma-separated)"}
MODEL_FIELDS = {"d_model": "d_model", "n_layers": "layers", "n_experts": "experts"}
# Where the form starts (values, not rules): a short run of the workbench's small default model.
TRAIN_START = {"steps": 200}
MODEL_START = {k: services.DEFAULT_MODEL[k] for k in MODEL_FIELDS}
# Free-text fields the workbench offers a short list for (each value is checked against the field's spec).
OFFER = {"data": ("default", "synthetic")}


def _bounds(spec: Spec, integer: bool) -> tuple[tuple, tuple[bool, bool]]:
    """(low, high), (low inclusive, high inclusive) from ge/gt/le/lt; an int's strict bound becomes inclusive."""
    low, low_in = (spec.ge, True) if spec.ge is not None else (spec.gt, False)
    high, high_in = (spec.le, True) if spec.le is not None else (spec.lt, False)
    if integer:
        if low is not None and not low_in:
            low, low_in = math.floor(low) + 1, True
        if high is not None and not high_in:
            high, high_in = math.ceil(high) - 1, True
        low = None if low is None else int(low)
        high = None if high is None else int(high)
    return (low, high), (low is None or low_in, high is None or high_in)


def parameter_for(spec: Spec, default=None, offer: tuple | None = None) -> param.Parameter | None:
    """The ``param`` parameter that holds ``spec``'s value under its rules (None: not a form field, e.g. a dict)."""
    value = spec.default if default is None else default
    value = getattr(value, "value", value)  # an enum member: the plain value the form holds
    kw = dict(default=value, doc=spec.help, allow_None=spec.optional)
    kind = spec.type
    if spec.choices is not None or offer:
        objects = list(spec.choices) if spec.choices is not None else [spec.check(v) for v in offer]
        if value not in objects:
            objects.insert(0, value)
        return param.Selector(objects=objects, **kw)
    if kind is bool:
        return param.Boolean(**kw)
    if kind is int:
        bounds, inclusive = _bounds(spec, integer=True)
        return param.Integer(bounds=bounds, inclusive_bounds=inclusive, **kw)
    if kind is float:
        bounds, inclusive = _bounds(spec, integer=False)
        return param.Number(bounds=bounds, inclusive_bounds=inclusive, **kw)
    if kind is str:
        return param.String(**kw)
    return None


def widget_for(values: param.Parameterized, name: str, label: str) -> pn.widgets.Widget:
    """The widget for one parameter of a ``SpecForm``'s values (its bounds, choices and tooltip included)."""
    p = values.param[name]
    if isinstance(p, param.Selector):
        return pn.widgets.Select.from_param(p, label=label)
    if isinstance(p, param.Boolean):
        return pn.widgets.Checkbox.from_param(p, label=label)
    if isinstance(p, param.Integer):
        return pn.widgets.IntInput.from_param(p, label=label)
    if isinstance(p, param.Number):
        scale = abs(p.default) if p.default else 1.0
        step = 10.0 ** (math.floor(math.log10(scale)) - 1)
        return pn.widgets.FloatInput.from_param(p, label=label, step=step, format="0.[000000]")
    return pn.widgets.TextInput.from_param(p, label=label)


# Names every Parameterized already has: a field of that name is held under ``<name>_`` (``attrs``).
RESERVED = frozenset(param.Parameterized.param) | {"param"}


class SpecForm(pn.viewable.Viewer):
    """A form over ``specs``: ``values`` (a Parameterized, one parameter per field) and its widgets.

    ``values.<field>`` holds each field (``attrs[field]`` names it where the field's name is one every
    Parameterized has, e.g. ``name`` -> ``name_``); ``get``/``set`` take field names.

    ``fields`` ({name: label}) picks and orders the fields shown (all form-able specs by default; a
    name the schema lacks is a KeyError); ``start`` gives starting values other than the schema's
    defaults; ``offer`` a short list of values for a free-text field; ``**values`` set fields by name.
    """

    def __init__(self, field_specs: list[Spec], fields: dict[str, str] | None = None, start: dict | None = None,
                 offer: dict | None = None, css_classes: list[str] | None = None, **values):
        super().__init__()
        by_name = {s.name: s for s in field_specs}
        fields = fields or {s.name: s.name for s in field_specs}
        missing = [n for n in fields if n not in by_name]
        if missing:
            raise KeyError(f"the schema has no field(s) {', '.join(missing)} (it has {', '.join(by_name)})")
        start, offer = start or {}, offer or {}
        params = {}
        for name in fields:
            p = parameter_for(by_name[name], start.get(name), offer.get(name))
            if p is not None:
                params[name] = p
        unknown = sorted(set(values) - set(params))
        if unknown:
            raise TypeError(f"the form has no field(s) {', '.join(unknown)} (it has {', '.join(params)})")
        self.specs = {n: by_name[n] for n in params}
        self.labels = {n: fields[n] for n in params}
        self.attrs = {n: f"{n}_" if n in RESERVED else n for n in params}
        cls = param.parameterized_class("FormValues", {self.attrs[n]: p for n, p in params.items()})
        self.values = cls(**{self.attrs[n]: v for n, v in values.items()})
        self.widgets = {n: widget_for(self.values, self.attrs[n], self.labels[n]) for n in params}
        self._css = css_classes or []

    def get(self, field: str):
        return getattr(self.values, self.attrs[field])

    def set(self, field: str, value) -> None:
        setattr(self.values, self.attrs[field], value)

    def to_dict(self) -> dict:
        """{field: value} as the form holds it."""
        return {n: self.get(n) for n in self.specs}

    def checked(self) -> dict:
        """``to_dict()`` checked by each field's own spec (a ValueError names the field and the rule)."""
        return {n: s.check(self.get(n)) for n, s in self.specs.items()}

    def __panel__(self):
        return pn.Column(*self.widgets.values(), css_classes=self._css)


def train_specs() -> list[Spec]:
    return specs(TrainConfig)


def model_specs() -> list[Spec]:
    return specs(VMMoEConfig)


class RunForm(pn.viewable.Viewer):
    """The run form: ``TRAIN_FIELDS`` of ``TrainConfig`` and ``MODEL_FIELDS`` of its model, from the schema."""

    def __init__(self, **values):
        super().__init__()
        train = {k: v for k, v in values.items() if k in TRAIN_FIELDS}
        model = {k: v for k, v in values.items() if k not in TRAIN_FIELDS}
        have = {s.name for s in train_specs()}  # the run's name and tags, where the schema declares them
        fields = {k: v for k, v in TRAIN_FIELDS.items() if k in have or k not in ("name", "tags")}
        self.train = SpecForm(train_specs(), fields, start=TRAIN_START, offer=OFFER, **train)
        self.model = SpecForm(model_specs(), MODEL_FIELDS, start=MODEL_START, **model)
        self.device_label = pn.pane.Markdown("", css_classes=["wb-training-device"])
        self.train.values.param.watch(lambda *_: self.show_device(), "device")
        self.show_device()
        self.disable_unusable_devices()

    def disable_unusable_devices(self) -> dict[str, str]:
        """Grey out the device choices this machine cannot use (``model.device.resolve_device`` refuses
        them), each with its reason under the form; a disabled choice that was set falls back to auto."""
        widget = self.train.widgets.get("device")
        options = list(getattr(widget, "options", []) or [])
        reasons = {}
        for name in options:
            try:
                resolve_device(name)
            except (ValueError, RuntimeError) as exc:
                reasons[name] = services.plain_error(exc)
        if widget is not None and hasattr(widget, "disabled_options"):
            widget.disabled_options = list(reasons)
            if widget.value in reasons and "auto" in options:
                widget.value = "auto"
        self.device_reasons = reasons
        self.show_device()
        return reasons
    def steps(self) -> int:
        return self.train.values.steps

    def train_config(self) -> dict:
        """The TrainConfig dict the form describes (validated by ``TrainConfig.from_dict`` on start)."""
        sizes = self.model.to_dict()
        model = dict(services.DEFAULT_MODEL, **sizes)
        model["top_k"] = min(services.DEFAULT_MODEL["top_k"], model["n_experts"])
        return {**self.train.to_dict(), "model": model}

    def show_device(self) -> None:
        device = self.train.values.device
        try:
            dev, dtype = resolve_device(device)
            self.device_label.object = f'device **"{device}"** resolves to **{dev}** ({str(dtype)[6:]})'
        except (ValueError, RuntimeError) as exc:
            self.device_label.object = f'device **"{device}"** is not usable here: {services.plain_error(exc)}'
        off = getattr(self, "device_reasons", {})
        if off:
            self.device_label.object += "".join(f'\n\n*"{n}" is disabled: {why}*' for n, why in off.items())

    def __panel__(self):
        return pn.Column(self.train, self.model, width=280, css_classes=["wb-training-form"])
