"""Packing view: choose data, max_len, strategy and mode; see the pack layout, its utilization, packed
vs padded side by side, and the length histogram. The chosen batch drives States/Routing/Leakage.

The layouts depend only on the sequence lengths, so they are drawn from ``pack_sequences`` over
1-wide placeholders (cheap even for 10,000 segments); the batch handed to the model views is packed
from the real vectors. Synthetic data is the model layer's (``model.synthetic.demo_sequences``).
"""
from __future__ import annotations

import panel as pn
import param
import torch

from model.packing import MODES, pack_sequences
from model.synthetic import demo_sequences
from workbench import plots
from workbench.state import WorkbenchState

DATA_CHOICES = ("concept store documents", "synthetic lengths")
MAX_BATCH_BYTES = 256 << 20  # above this the real-vector batch is not built (the model views keep theirs)


class PackingView(pn.viewable.Viewer):
    data = param.Selector(default=DATA_CHOICES[0], objects=list(DATA_CHOICES))
    max_len = param.Integer(default=256, bounds=(2, 8192))
    strategy = param.Selector(default="bfd", objects=["bfd", "ffd"])
    mode = param.Selector(default="packed", objects=list(MODES))  # the row layouts model.packing defines
    n_synthetic = param.Integer(default=2000, bounds=(1, 20000), doc="synthetic: number of sequences")
    mean_len = param.Integer(default=24, bounds=(2, 2048), doc="synthetic: mean sequence length")
    seed = param.Integer(default=0, bounds=(0, None))

    def __init__(self, state: WorkbenchState, **params):
        super().__init__(**params)
        self.state = state
        self.layout_batch = None   # PackedBatch over placeholders, chosen mode
        self.compare = {}          # mode -> PackedBatch over placeholders ("packed", "padded")
        self._seqs_key = None
        self._seqs: list[torch.Tensor] = []
        self._names: list[str] = []  # the document of each sequence (tooltips)
        self._layout_pane = pn.pane.Bokeh(sizing_mode="stretch_width", css_classes=["wb-packing-layout"])
        self._packed_pane = pn.pane.Bokeh(sizing_mode="stretch_width", css_classes=["wb-packing-packed"])
        self._padded_pane = pn.pane.Bokeh(sizing_mode="stretch_width", css_classes=["wb-packing-padded"])
        self._hist_pane = pn.pane.Bokeh(sizing_mode="stretch_width", css_classes=["wb-packing-histogram"])
        self._summary = pn.pane.Markdown("", css_classes=["wb-packing-utilization"])
        self._waiting = pn.pane.Markdown("", css_classes=["wb-packing-status"])
        self.state.param.watch(lambda *_: self._on_store(), "store")
        self.recompute()

    # --- data ---------------------------------------------------------------------------------------
    def sequences(self) -> list[torch.Tensor]:
        """The chosen sequences as (len_i, d) tensors (cached while the choice stays the same)."""
        if self.data == DATA_CHOICES[0]:
            store = self.state.store
            # a new sentence or vector changes the store's size or generation: read the documents again
            key = ("store", id(store)) + ((len(store), store.n_vectors, store.generation) if store is not None else ())
            if key != self._seqs_key:
                docs = [] if store is None else store.document_sequences(min_len=2)
                by_id = {} if store is None else {d.id: d.name for d in store.documents()}
                self._seqs = [s.vectors for s in docs]
                self._names = [f"{by_id.get(s.doc_id, '?')} (#{s.doc_id})" for s in docs]
        else:
            key = ("synthetic", self.n_synthetic, self.mean_len, self.seed, self.state.d_concept)
            if key != self._seqs_key:
                self._seqs = demo_sequences(self.n_synthetic, self.mean_len, self.state.d_concept, self.seed)
                self._names = [f"synthetic sequence {i}" for i in range(len(self._seqs))]
        self._seqs_key = key
        return self._seqs

    def _on_store(self):
        if self.data == DATA_CHOICES[0]:
            self.recompute()

    # --- compute and draw ---------------------------------------------------------------------------
    @param.depends("data", "max_len", "strategy", "mode", "n_synthetic", "mean_len", "seed", watch=True)
    def recompute(self):
        seqs = self.sequences()
        if not seqs:
            self._waiting.object = ("**Waiting for the concept store** (it is being built on this first start)."
                                    if self.state.store is None else
                                    "**The store has no encoded documents** of 2 or more sentences yet.")
            return
        self._waiting.object = ""
        lengths = [int(s.shape[0]) for s in seqs]
        holders = [torch.zeros(n, 1) for n in lengths]  # the layout depends on lengths only
        try:
            self.layout_batch = pack_sequences(holders, self.max_len, mode=self.mode, strategy=self.strategy)
            self.compare = {m: (self.layout_batch if m == self.mode else
                                pack_sequences(holders, self.max_len, mode=m, strategy=self.strategy))
                            for m in ("packed", "padded")}
        except ValueError as exc:
            self.state.fail(exc)
            return
        self._draw(lengths)
        self._hand_batch_to_model_views(seqs)

    def _draw(self, lengths: list[int]):
        b = self.layout_batch
        rows = b.segment_ids.shape[0]
        # the number and the picture come from the same plan: ``single`` steps each row alone, so no padding
        # is computed (utilization 1.0) and none is drawn
        how = ("each row stepped alone, no padding computed" if b.mode == "single" else
               f"{self.strategy}, max_len {self.max_len}")
        self._layout_pane.object = plots.pack_layout_figure(
            b, f"{self.mode} layout ({how}): {rows} rows, utilization {b.utilization:.1%}",
            height=420 if rows <= 400 else 560, names=self._names)
        packed, padded = self.compare["packed"], self.compare["padded"]
        self._packed_pane.object = plots.pack_layout_figure(
            packed, f"packed: {packed.segment_ids.shape[0]} rows, {packed.utilization:.1%} used", height=300,
            names=self._names)
        self._padded_pane.object = plots.pack_layout_figure(
            padded, f"padded: {padded.segment_ids.shape[0]} rows, {padded.utilization:.1%} used", height=300,
            names=self._names)
        self._hist_pane.object = plots.length_histogram(lengths, self.max_len)
        n_seg = len(plots.segment_table_array(b))
        speedup = padded.segment_ids.numel() / max(1, packed.segment_ids.numel())
        self._summary.object = (
            f"**{len(lengths)} sequences, {sum(lengths)} concepts → {n_seg} segments.** "
            f"Utilization: **{b.mode} {b.utilization:.1%}** · packed {packed.utilization:.1%} "
            f"({packed.segment_ids.shape[0]} rows) · padded {padded.utilization:.1%} "
            f"({padded.segment_ids.shape[0]} rows) · padded runs {speedup:.2f}× the positions of packed.")

    def _hand_batch_to_model_views(self, seqs: list[torch.Tensor]):
        b = self.layout_batch
        size = b.segment_ids.numel() * seqs[0].shape[1] * 4
        if size > MAX_BATCH_BYTES:
            self._summary.object += (f"\n\nThis {self.mode} batch would hold {size / 2**20:.0f} MiB of vectors: "
                                     "the States, Routing and Leakage views keep the previous batch.")
            return
        batch = pack_sequences(seqs, self.max_len, mode=self.mode, strategy=self.strategy)
        self.state.set_batch(batch, f"batch: {self.data}, {self.mode}/{self.strategy}, max_len {self.max_len}")

    def __panel__(self):
        controls = pn.Column(
            pn.widgets.Select.from_param(self.param.data, label="data", css_classes=["wb-packing-data"]),
            pn.widgets.IntInput.from_param(self.param.max_len, label="max_len", css_classes=["wb-packing-maxlen"]),
            pn.widgets.RadioButtonGroup.from_param(self.param.strategy, css_classes=["wb-packing-strategy"]),
            pn.widgets.RadioButtonGroup.from_param(self.param.mode, css_classes=["wb-packing-mode"]),
            pn.widgets.IntInput.from_param(self.param.n_synthetic, label="synthetic sequences",
                                           css_classes=["wb-packing-nsynthetic"]),
            pn.widgets.IntInput.from_param(self.param.mean_len, label="synthetic mean length"),
            width=260,
        )
        return pn.Column(
            pn.Row(controls, pn.Column(self._waiting, self._summary, self._layout_pane, sizing_mode="stretch_width"),
                   sizing_mode="stretch_width"),
            pn.Row(self._packed_pane, self._padded_pane, sizing_mode="stretch_width"),
            self._hist_pane,
            sizing_mode="stretch_width", css_classes=["wb-packing"],
        )
