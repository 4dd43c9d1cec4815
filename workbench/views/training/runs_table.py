"""The runs table: one row per run folder (``model.train.list_runs``), newest first.

Rows never move in the table's data: a run keeps the row it got when it first appeared, a new run is
streamed in after the others, and a live run's row is patched (only the cells that changed). The browser
draws the rows in reverse (a stylesheet), newest first; the hidden "order" column says which came when. So a
row's index means the same run before and after any update: a click or a selection the browser sends
while an update is on its way still lands on the run the user saw (a table replaced to put a new run on
top shifted every row, and such a click picked the run above). ``selected`` is the run the user picked;
re-reading the table never changes it.
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
ORDER = "order"  # hidden: the table's own, increasing as runs appear (the data's order)
# The rows in the data are oldest first and never move; the browser draws them in reverse. Not a Tabulator
# sort: a table built with ``sorters`` sorts itself while it is built and, doing so, re-renders the page
# with its stylesheets taken from cdn.holoviz.org (Panel 1.9; offline, 30 failed loads).
NEWEST_ON_TOP = (".tabulator .tabulator-tableholder .tabulator-table { display: inline-flex !important; "
                 "flex-direction: column-reverse !important; }")


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
        self._order: dict[str, int] = {}  # run name -> its ORDER value (kept while the view lives)
        self.table = pn.widgets.Tabulator(pd.DataFrame(columns=[*RUN_COLUMNS, ORDER]), disabled=True,
                                          selectable=True, show_index=False, height=240, layout="fit_data_table",
                                          sizing_mode="stretch_width", hidden_columns=[ORDER],
                                          # every row rendered (not only those in view), so that the CSS below
                                          # can show them in reverse: the newest on top
                                          configuration={"renderVertical": "basic"},
                                          stylesheets=[NEWEST_ON_TOP],
                                          sortable=False,  # a header sort would be drawn reversed
                                          css_classes=["wb-training-runs"])
        self.table.param.watch(lambda *_: self._on_selection(), "selection")
        self.table.on_click(self._on_click)

    @property
    def names(self) -> list[str]:
        """The runs as the table shows them: newest first."""
        df = self.table.value
        if df is None or df.empty:
            return []
        return [str(n) for n in df.sort_values(ORDER, ascending=False, kind="stable")["name"]]

    def _row_names(self) -> list[str]:
        """The runs in the table's data order: ``selection`` and click events index this list."""
        df = self.table.value
        return [] if df is None or df.empty else [str(n) for n in df["name"]]

    def _chosen_names(self) -> list[str]:
        rows = self._row_names()
        chosen = {rows[i] for i in self.table.selection or [] if i < len(rows)}
        return [n for n in self.names if n in chosen]  # in the order shown

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
        """A click on a row follows that run, even when it changes no selection (the row was selected
        already): a click is an event, always sent. ``event.row`` is the row's index in the data, which
        names the same run across every update (rows never move)."""
        rows = self._row_names()
        if 0 <= event.row < len(rows):
            self.selected = rows[event.row]

    def select(self, name: str) -> None:
        """Select ``name`` alone (a run started here): the table shows what the view follows."""
        rows = self._row_names()
        if name not in rows:
            return
        self._showing = True
        try:
            self.table.selection = [rows.index(name)]
        finally:
            self._showing = False
        self.param.update(chosen=[name], selected=name)

    def show(self, runs: list[dict]) -> list[str]:
        """Put ``runs`` (``list_runs`` rows, newest first) in the table: the cells that changed are patched, new
        runs streamed in (shown on top); only when a run folder went away is the table replaced. Returns the
        names, newest first."""
        for r in reversed(runs):  # the newest of those not seen yet gets the highest order
            self._order.setdefault(str(r["name"]), len(self._order))
        df = pd.DataFrame(runs, columns=RUN_COLUMNS) if runs else pd.DataFrame(columns=RUN_COLUMNS)
        df[ORDER] = [self._order[str(n)] for n in df["name"]]
        old = self.table.value
        rows = self._row_names()
        if rows and set(rows) <= set(df["name"]) and list(old.columns) == list(df.columns):
            by_name = df.set_index("name", drop=False)
            kept = by_name.loc[rows].reset_index(drop=True)  # the rows there are, in their own order
            changes = {c: [(i, b) for i, (a, b) in enumerate(zip(old[c], kept[c])) if not same_cell(a, b)]
                       for c in df.columns}
            changes = {c: cells for c, cells in changes.items() if cells}
            added = df[~df["name"].isin(rows)].iloc[::-1]  # oldest first: each new row on top of those before
            try:
                if changes:
                    self.table.patch(changes, as_index=False)
                if len(added):
                    self.table.stream(added.reset_index(drop=True), follow=False)
                return self.names
            except (TypeError, ValueError):  # a value the column's dtype cannot hold: replace the table
                pass
        df = df.sort_values(ORDER, kind="stable").reset_index(drop=True)  # data order = the order runs appeared
        names = [str(n) for n in df["name"]]
        self._showing = True
        try:
            self.table.value = df
            self.table.selection = [names.index(n) for n in self.chosen if n in names]
        finally:
            self._showing = False
        self.chosen = [n for n in self.names if n in self.chosen]
        if self.selected not in names:
            self.selected = None
        return self.names

    def __panel__(self):
        return self.table
