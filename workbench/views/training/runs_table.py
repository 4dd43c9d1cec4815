"""The runs table: one row per run folder (``model.train.list_runs``), newest first.

A live run changes its row on every re-read; the table sends only the cells that changed (a new value
re-draws the whole table in the browser and drops the user's row selection). ``selected`` is the run
the user picked; re-reading the table never changes it.
"""
from __future__ import annotations

import pandas as pd
import panel as pn
import param

from model.train import list_runs
from model.train.runs import RunDir
from model.train.summary import summarize_run

RUN_COLUMNS = ["name", "tags", "state", "step", "steps", "packing", "loss", "lr", "d_model", "layers", "device",
               "held-out loss", "held-out cos", "held-out top-1", "vs copy", "updated"]
def _fmt(v, spec: str) -> str:
    return "" if v is None else format(v, spec)


def runs_rows(runs_dir) -> list[dict]:
    """``list_runs`` rows with the run's tags, key hyperparameters and best held-out figures, formatted
    (``model.train.summary``: the eval with the lowest loss; "vs copy" = its cosine minus copying's)."""
    rows = []
    for r in list_runs(runs_dir):
        try:
            cfg = RunDir(r["path"]).read_config()
        except (OSError, ValueError):
            cfg = {}
        model, s = cfg.get("model") or {}, summarize_run(r["path"])  # cached by the model layer
        tags = cfg.get("tags") or ""
        margin = s.margin
        rows.append({**r, "tags": ", ".join(tags) if isinstance(tags, (list, tuple)) else str(tags),
                     "loss": cfg.get("loss", ""), "lr": _fmt(cfg.get("lr"), ".0e"),
                     "d_model": model.get("d_model"), "layers": model.get("n_layers"),
                     "held-out loss": _fmt(s.best_eval_loss, ".4f"), "held-out cos": _fmt(s.best_eval_cosine, ".3f"),
                     "held-out top-1": _fmt(s.best_eval_top1, ".1%"),
                     "vs copy": "" if margin is None else f"{margin:+.3f} {'beats' if margin > 0 else 'below'} copy",
                     "updated": str(r.get("updated", ""))[:19].replace("T", " ")})
    return rows


def same_cell(a, b) -> bool:
    """Equal table cells; a missing value (None, NaN) equals only another missing one."""
    def missing(x):
        return x is None or (isinstance(x, float) and x != x)
    if missing(a) or missing(b):
        return missing(a) and missing(b)
    return bool(a == b)


class RunsTable(pn.viewable.Viewer):
    selected = param.String(default=None, allow_None=True,
                            doc="the run the user selected last (the one followed, resumed)")
    chosen = param.List(default=[], doc="all the selected runs, in table order (overlaid in the comparison)")

    def __init__(self, **params):
        super().__init__(**params)
        self._showing = False  # while show() replaces the table: its selection events are not the user's
        self.table = pn.widgets.Tabulator(pd.DataFrame(columns=RUN_COLUMNS), disabled=True, selectable=True,
                                          show_index=False, height=240, layout="fit_data_table", sizing_mode="stretch_width",
                                          css_classes=["wb-training-runs"])
        self.table.param.watch(lambda *_: self._on_selection(), "selection")
        self.table.on_click(self._on_click)

    @property
    def names(self) -> list[str]:
        df = self.table.value
        return [] if df is None or df.empty else [str(n) for n in df["name"]]

    def _chosen_names(self) -> list[str]:
        names = self.names
        return [names[i] for i in sorted(self.table.selection or []) if i < len(names)]

    def _on_selection(self) -> None:
        if self._showing:
            return
        chosen = self._chosen_names()
        added = [n for n in chosen if n not in self.chosen]
        self.chosen = chosen
        if added:
            self.selected = added[-1]
        elif self.selected not in chosen:
            self.selected = chosen[-1] if chosen else None

    def _on_click(self, event) -> None:
        """A click on a row follows that run. The selection alone cannot say so: after ``show`` replaced the
        table (a new run on top shifts the rows), the browser may still hold the old row indices, and a click
        that selects the row now at a held index sends no change. A click is an event, always sent."""
        names = self.names
        if 0 <= event.row < len(names):
            self.selected = names[event.row]

    def select(self, name: str) -> None:
        """Select ``name`` alone (a run started here): the table shows what the view follows."""
        names = self.names
        if name not in names:
            return
        self._showing = True
        try:
            self.table.selection = [names.index(name)]
        finally:
            self._showing = False
        self.param.update(chosen=[name], selected=name)

    def show(self, runs: list[dict]) -> list[str]:
        """Put ``runs`` (``list_runs`` rows) in the table, patching the cells that changed; the names, in order."""
        df = pd.DataFrame(runs, columns=RUN_COLUMNS) if runs else pd.DataFrame(columns=RUN_COLUMNS)
        old = self.table.value
        if old is not None and list(old.columns) == list(df.columns) and list(old["name"]) == list(df["name"]):
            changes = {c: [(i, b) for i, (a, b) in enumerate(zip(old[c], df[c])) if not same_cell(a, b)]
                       for c in df.columns}
            changes = {c: cells for c, cells in changes.items() if cells}
            try:
                if changes:
                    self.table.patch(changes, as_index=False)
                return self.names
            except (TypeError, ValueError):  # a value the column's dtype cannot hold: replace the table
                pass
        names = [str(n) for n in df["name"]]
        self._showing = True
        try:
            self.table.value = df
            self.table.selection = [names.index(n) for n in self.chosen if n in names]
        finally:
            self._showing = False
        self.chosen = [n for n in self.chosen if n in names]
        if self.selected not in names:
            self.selected = None
        return names

    def __panel__(self):
        return self.table
