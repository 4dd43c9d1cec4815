"""The runs table: one row per run folder (``model.train.list_runs``), newest first.

A live run changes its row on every re-read; the table sends only the cells that changed (a new value
re-draws the whole table in the browser and drops the user's row selection). ``selected`` is the run
the user picked; re-reading the table never changes it.
"""
from __future__ import annotations

import pandas as pd
import panel as pn
import param

RUN_COLUMNS = ["name", "state", "step", "steps", "packing", "device", "eval_loss", "updated"]


def same_cell(a, b) -> bool:
    """Equal table cells; a missing value (None, NaN) equals only another missing one."""
    def missing(x):
        return x is None or (isinstance(x, float) and x != x)
    if missing(a) or missing(b):
        return missing(a) and missing(b)
    return bool(a == b)


class RunsTable(pn.viewable.Viewer):
    selected = param.String(default=None, allow_None=True, doc="name of the run the user selected")

    def __init__(self, **params):
        super().__init__(**params)
        self._showing = False  # while show() replaces the table: its selection events are not the user's
        self.table = pn.widgets.Tabulator(pd.DataFrame(columns=RUN_COLUMNS), disabled=True, selectable=1,
                                          show_index=False, height=220, sizing_mode="stretch_width",
                                          css_classes=["wb-training-runs"])
        self.table.param.watch(lambda *_: self._on_selection(), "selection")

    @property
    def names(self) -> list[str]:
        df = self.table.value
        return [] if df is None or df.empty else [str(n) for n in df["name"]]

    def _selected_row_name(self) -> str | None:
        sel, names = self.table.selection, self.names
        return names[sel[0]] if sel and sel[0] < len(names) else None

    def _on_selection(self) -> None:
        if not self._showing:
            self.selected = self._selected_row_name()

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
            self.table.selection = [names.index(self.selected)] if self.selected in names else []
        finally:
            self._showing = False
        if self.selected not in names:
            self.selected = None
        return names

    def __panel__(self):
        return self.table
