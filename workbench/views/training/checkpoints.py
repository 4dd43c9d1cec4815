"""The checkpoint picker: the model the States, Routing and Leakage views inspect (a run's checkpoint,
or the fresh default model)."""
from __future__ import annotations

from pathlib import Path

import panel as pn

from model.train import load_checkpoint
from model.train.runs import RunDir
from workbench.state import WorkbenchState


class CheckpointPicker(pn.viewable.Viewer):
    def __init__(self, state: WorkbenchState, **params):
        super().__init__(**params)
        self.state = state
        self.run = pn.widgets.Select(label="run", css_classes=["wb-training-checkpoint-run"])
        self.checkpoint = pn.widgets.Select(label="checkpoint", css_classes=["wb-training-checkpoint"])
        self.run.param.watch(lambda *_: self.list_checkpoints(), "value")
        self._default: str | None = None  # the value the picker chose itself (not the user)
        self._use = pn.widgets.Button(label="Inspect this checkpoint", color="success",
                                      css_classes=["wb-training-use-checkpoint"])
        self._use_default = pn.widgets.Button(label="Inspect the fresh default model",
                                              css_classes=["wb-training-use-default"])
        self._use.on_click(lambda *_: self.use_checkpoint())
        self._use_default.on_click(lambda *_: self.state.use_default_model())

    def set_runs(self, names: list[str]) -> None:
        """Offer ``names`` (newest first; the chosen run stays while it exists) and re-list its checkpoints."""
        value = self.run.value if self.run.value in names else (names[0] if names else None)
        self.run.param.update(options=names, value=value)
        self.list_checkpoints()  # the chosen run may have written new checkpoints

    def list_checkpoints(self) -> None:
        name = self.run.value
        run = RunDir(Path(self.state.runs_dir) / name) if name else None
        dirs = run.checkpoint_dirs() if run else []
        options = {d.name: str(d) for d in reversed(dirs)}  # newest first
        best = run.checkpoints / "best" if run else None
        if best is not None and best.is_dir() and str(best) not in options.values():
            options = {"best (lowest held-out loss)": str(best), **options}
        default = next(iter(options.values()), None)  # best, else the newest
        # the user's own pick stays while it exists; the picker's own default follows the newest
        user_pick = self.checkpoint.value in options.values() and self.checkpoint.value != self._default
        self._default = default
        self.checkpoint.param.update(options=options, value=self.checkpoint.value if user_pick else default)

    def use_checkpoint(self, path: str | None = None) -> None:
        """Load a checkpoint (folder, or a run folder: its newest) as the model the other views inspect."""
        path = path or self.checkpoint.value
        if not path:
            self.state.notify("pick a run and a checkpoint first", "warning")
            return
        try:
            model, _cfg, meta = load_checkpoint(path)
        except (ValueError, OSError) as exc:
            self.state.fail(exc)
            return
        if model.config.d_concept != self.state.d_concept:
            self.state.notify(f"that model reads {model.config.d_concept}-d vectors but the data has "
                              f"{self.state.d_concept}", "error")
            return
        ckpt = Path(meta["path"])
        self.state.set_model(model, f"checkpoint {ckpt.parent.parent.name}/{ckpt.name} (step {meta.get('step')})")
        self.state.notify(f"inspecting {ckpt.parent.parent.name}/{ckpt.name}", "success")

    def __panel__(self):
        return pn.Row(self.run, self.checkpoint, self._use, self._use_default)
