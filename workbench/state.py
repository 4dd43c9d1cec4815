"""The one app state every view reads and writes (one instance per browser session).

    store  --(Concepts, Packing)-->  batch  --(States, Routing, Leakage)-->  drawn from model outputs
    model  <--(Training: checkpoint picker; default: fresh small model, fixed seed)

Views watch these parameters; none of them computes model things itself.
"""
from __future__ import annotations

import threading

import panel as pn
import param
import torch

from workbench import services

LEVELS = ("info", "success", "warning", "error")


class WorkbenchState(param.Parameterized):
    store = param.Parameter(default=None, doc="the open ConceptStore (None while the default store is built)")
    model = param.Parameter(default=None, doc="the VMMoE that States, Routing and Leakage inspect")
    model_label = param.String(default="", doc="where the model came from (fresh default or a checkpoint)")
    batch = param.Parameter(default=None, doc="the PackedBatch chosen in the Packing view")
    batch_label = param.String(default="")
    row = param.Integer(default=0, bounds=(0, None), doc="the packed row the States/Routing/Leakage views show")
    runs_dir = param.String(default="", doc="folder of training runs")
    messages = param.List(default=[], doc="every notification shown, as (level, message)")

    def __init__(self, **params):
        params.setdefault("runs_dir", str(services.default_runs_dir()))
        super().__init__(**params)
        self._outputs: dict = {}
        self._lock = threading.Lock()
        self.param.watch(self._refuse_missing_row, "row")  # first: the views watch it later

    def _refuse_missing_row(self, event) -> None:
        """A row the batch does not have is refused: a notification, and ``row`` (with every box showing it)
        goes back to the last valid value."""
        if self.batch is None or 0 <= event.new < self.n_rows():
            return
        self.notify(f"row {event.new} does not exist: the batch has {self.n_rows()} rows (0..{self.n_rows() - 1})",
                    "error")
        # the views read ``self.row`` when they draw: they see the restored value
        self.row = event.old if 0 <= event.old < self.n_rows() else 0

    # --- notifications --------------------------------------------------------------------------------
    def notify(self, message: str, level: str = "info") -> None:
        """Show a plain message (never a traceback) and keep it in ``messages``."""
        if level not in LEVELS:
            raise ValueError(f"notification level must be one of {LEVELS}, got {level!r}")
        self.messages = [*self.messages, (level, message)]
        area = pn.state.notifications
        if area is not None:
            getattr(area, level)(message, duration=6000 if level == "error" else 3000)

    def fail(self, exc: BaseException) -> None:
        self.notify(services.plain_error(exc), "error")

    # --- model -----------------------------------------------------------------------------------------
    @property
    def d_concept(self) -> int:
        """The vector size of the data: the store's, else MiniLM's 384."""
        return self.store.dim if self.store is not None else 384

    def use_default_model(self) -> None:
        self.set_model(services.default_model(self.d_concept),
                       f"fresh default model (seed {services.DEFAULT_SEED}, untrained)")

    def set_model(self, model, label: str) -> None:
        with self._lock:
            self._outputs.clear()
        self.param.update(model=model.eval(), model_label=label)

    @param.depends("store", watch=True)
    def _model_matches_store(self):
        # a new store may have another vector size: the default model follows it
        if self.model is None or self.model.config.d_concept != self.d_concept:
            self.use_default_model()

    def set_batch(self, batch, label: str) -> None:
        """Show ``batch`` in the model views, starting at its first row that holds two or more segments."""
        with self._lock:
            self._outputs.clear()
        multi = (batch.segment_ids.max(dim=1).values >= 1).nonzero()
        self.param.update(batch=batch, batch_label=label, row=int(multi[0]) if len(multi) else 0)

    def n_rows(self) -> int:
        return 0 if self.batch is None else int(self.batch.values.shape[0])

    def row_output(self, row: int | None = None, leaky: bool = False):
        """VMMoEOutput with a Trace for one packed row of ``batch`` (cached per model/batch/row).

        ``leaky=True`` runs the same weights with resets off. Returns None when there is no batch.
        """
        if self.batch is None or self.model is None:
            return None
        row = self.row if row is None else row
        if not 0 <= row < self.n_rows():
            raise ValueError(f"row {row} does not exist: the batch has {self.n_rows()} rows")
        key = (id(self.model), id(self.batch), row, leaky)
        with self._lock:
            if key in self._outputs:
                return self._outputs[key]
        model = services.leaky_twin(self.model) if leaky else self.model
        values, segment_ids = self.row_tensors(row)
        with torch.no_grad():
            out = model(values, segment_ids, trace=True)
        with self._lock:
            self._outputs[key] = out
        return out

    def row_tensors(self, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(values (1, L, d), segment_ids (1, L)) of one row, trimmed after its last real position."""
        seg = self.batch.segment_ids[row:row + 1]
        used = int((seg >= 0).sum())
        return self.batch.values[row:row + 1, :used].float(), seg[:, :used]
