"""The live curves of the followed run: one ColumnDataSource, four figures, records streamed in."""
from __future__ import annotations

import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource
from bokeh.palettes import Category10

from workbench import plots

CURVES = (("loss", "training loss"), ("cosine", "cosine(prediction, next concept)"),
          ("concepts_per_s", "concepts per second"), ("utilization", "utilization (real / all positions)"))


class LiveCurves(pn.viewable.Viewer):
    """``append(records)`` streams train records into the curves; ``clear()`` starts them over.

    The source is a raw Bokeh model: change it only under the document lock (a next-tick or periodic
    callback when served).
    """

    def __init__(self, **params):
        super().__init__(**params)
        self.source = ColumnDataSource({c: [] for c in ("step", *[k for k, _ in CURVES])})
        self._grid = pn.GridBox(*[pn.pane.Bokeh(plots.curve_figure(self.source, key, title, color=Category10[4][i]),
                                                sizing_mode="stretch_width")
                                  for i, (key, title) in enumerate(CURVES)],
                                ncols=2, sizing_mode="stretch_width", css_classes=["wb-training-curves"])

    def append(self, records: list[dict]) -> None:
        if records:
            self.source.stream({"step": [r["step"] for r in records],
                                **{k: [float(r.get(k, np.nan)) for r in records] for k, _ in CURVES}})

    def clear(self) -> None:
        self.source.data = {k: [] for k in self.source.data}

    def __panel__(self):
        return self._grid
