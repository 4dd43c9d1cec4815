"""Bokeh figure builders. Each takes model-layer objects (PackedBatch, Trace, RoutingStats, tensors
from the leakage audit, run metrics) and draws them; none computes model things.

Large layouts stay fast by drawing with one ColumnDataSource and one glyph per figure.
"""
from __future__ import annotations

import numpy as np
import torch
from bokeh.models import (BasicTicker, ColorBar, ColumnDataSource, HoverTool, LinearColorMapper, Range1d, Span)
from bokeh.palettes import Category10, Category20, Viridis256
from bokeh.plotting import figure

PAD_COLOR = "#c8c8c8"  # padding is grey in every layout
# Category20 without its two greys, so that no segment can be mistaken for padding
SEGMENT_PALETTE = tuple(c for c in Category20[20] if c not in ("#7f7f7f", "#c7c7c7"))
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"


def _figure(title: str, height: int = 300, **kw):
    kw.setdefault("sizing_mode", "stretch_width")
    return figure(title=title, height=height, tools=TOOLS, toolbar_location="right", **kw)


def layer_names(n_layers: int) -> list[str]:
    """Axis labels of the residual-stream rows: after in_proj, then after each block."""
    return ["in_proj"] + [f"block {i}" for i in range(n_layers)]


def as_numpy(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().float().cpu().numpy() if t.is_floating_point() else t.detach().cpu().numpy()
    return np.asarray(t)


# --- packing ------------------------------------------------------------------------------------------
def segment_table_array(batch) -> np.ndarray:
    """``PackedBatch.segment_table()`` as an int array (S, 5): seq_index, chunk, row, start, length."""
    return np.asarray(batch.segment_table(), dtype=np.int64).reshape(-1, 5)


def pack_layout_data(batch) -> dict:
    """Columns for the layout quads: one entry per segment, then one grey entry per row with padding."""
    seg = segment_table_array(batch)
    seq, chunk, row, start, length = seg.T
    rows, L = batch.segment_ids.shape[:2]
    used = (as_numpy(batch.segment_ids) >= 0).sum(axis=1)
    pad_rows = np.flatnonzero(used < L)
    colors = np.asarray(SEGMENT_PALETTE, dtype=object)[seq % len(SEGMENT_PALETTE)]
    n_pad = len(pad_rows)
    return dict(
        left=np.concatenate([start, used[pad_rows]]).astype(float),
        right=np.concatenate([start + length, np.full(n_pad, L)]).astype(float),
        bottom=np.concatenate([row, pad_rows]).astype(float) + 0.05,
        top=np.concatenate([row, pad_rows]).astype(float) + 0.95,
        color=np.concatenate([colors, np.full(n_pad, PAD_COLOR, dtype=object)]),
        kind=np.concatenate([np.full(len(seq), "segment", dtype=object), np.full(n_pad, "padding", dtype=object)]),
        seq=np.concatenate([seq, np.full(n_pad, -1)]),
        chunk=np.concatenate([chunk, np.full(n_pad, -1)]),
        row=np.concatenate([row, pad_rows]),
        length=np.concatenate([length, L - used[pad_rows]]),
    )


def pack_layout_figure(batch, title: str, height: int = 360):
    """Rows x positions; every segment its own colour (by sequence), padding grey. One glyph."""
    rows, L = batch.segment_ids.shape[:2]
    source = ColumnDataSource(pack_layout_data(batch))
    p = _figure(title, height=height, x_range=Range1d(0, L), y_range=Range1d(rows, 0),
                x_axis_label="position", y_axis_label="row")
    p.quad(left="left", right="right", bottom="bottom", top="top", fill_color="color", line_color="white",
           line_width=0.5, source=source)
    p.add_tools(HoverTool(tooltips=[("", "@kind"), ("sequence", "@seq"), ("chunk", "@chunk"), ("row", "@row"),
                                    ("start", "@left{0}"), ("length", "@length")]))
    p.ygrid.visible = False
    return p


def length_histogram(lengths, max_len: int, height: int = 260):
    lengths = as_numpy(lengths).astype(np.int64)
    bins = min(50, max(1, int(lengths.max()) if len(lengths) else 1))
    counts, edges = np.histogram(lengths, bins=bins) if len(lengths) else (np.zeros(1), np.array([0, 1]))
    p = _figure(f"sequence lengths ({len(lengths)} sequences)", height=height, x_axis_label="length (concepts)",
                y_axis_label="sequences")
    p.quad(left=edges[:-1], right=edges[1:], bottom=0, top=counts, fill_color=Category10[3][0], line_color="white")
    p.add_layout(Span(location=max_len, dimension="height", line_color="red", line_dash="dashed"))
    return p


# --- heatmaps -----------------------------------------------------------------------------------------
def heatmap(matrix, title: str, x_label: str, y_label: str, y_names: list[str] | None = None,
            boundaries=(), low: float | None = None, high: float | None = None, palette=Viridis256,
            height: int = 280, value_name: str = "value", x_names: list[str] | None = None,
            nan_color: str = "#9e9e9e"):
    """One image glyph of ``matrix`` (Y, X); ``boundaries`` are x positions marked by dashed lines.

    ``x_names``/``y_names`` label discrete columns/rows at their centres; NaN cells get ``nan_color``.
    """
    m = as_numpy(matrix).astype(np.float64)
    ny, nx = m.shape
    finite = m[np.isfinite(m)]
    low = float(finite.min()) if low is None and finite.size else (low or 0.0)
    high = float(finite.max()) if high is None and finite.size else (high if high is not None else 1.0)
    if high <= low:
        high = low + 1e-9
    mapper = LinearColorMapper(palette=palette, low=low, high=high, nan_color=nan_color)
    p = _figure(title, height=height, x_range=Range1d(0, nx), y_range=Range1d(0, ny), x_axis_label=x_label,
                y_axis_label=y_label)
    source = ColumnDataSource(dict(image=[m], x=[0], y=[0], dw=[nx], dh=[ny]))
    p.image(image="image", x="x", y="y", dw="dw", dh="dh", color_mapper=mapper, source=source)
    p.add_tools(HoverTool(tooltips=[("x", "$x{0}"), ("y", "$y{0}"), (value_name, "@image{0.0000}")]))
    if y_names is not None:
        p.yaxis.ticker = [i + 0.5 for i in range(ny)]
        p.yaxis.major_label_overrides = {i + 0.5: name for i, name in enumerate(y_names)}
    if x_names is not None:
        p.xaxis.ticker = [i + 0.5 for i in range(nx)]
        p.xaxis.major_label_overrides = {i + 0.5: name for i, name in enumerate(x_names)}
    for b in boundaries:
        p.add_layout(Span(location=float(b), dimension="height", line_color="white", line_dash="dashed",
                          line_width=1.5))
    p.add_layout(ColorBar(color_mapper=mapper, ticker=BasicTicker(), width=10), "right")
    p.xgrid.visible = p.ygrid.visible = False
    return p


# --- routing ------------------------------------------------------------------------------------------
def expert_share_bars(shares, title: str, height: int = 280):
    """Stacked bars: per segment (x) the share of its assignments each expert got. shares (S, E)."""
    s = as_numpy(shares)
    n_seg, n_exp = s.shape
    names = [f"expert {e}" for e in range(n_exp)]
    data = {"segment": [str(i) for i in range(n_seg)], **{names[e]: s[:, e] for e in range(n_exp)}}
    palette = (Category20[20] * (n_exp // 20 + 1))[:n_exp] if n_exp > 10 else Category10[10][:n_exp]
    p = _figure(title, height=height, x_range=data["segment"], y_range=Range1d(0, 1.0),
                x_axis_label="segment", y_axis_label="share of assignments")
    p.vbar_stack(names, x="segment", width=0.8, color=palette, source=ColumnDataSource(data),
                 legend_label=names)
    p.legend.location = "top_right"
    p.legend.label_text_font_size = "8pt"
    return p


def segment_bars(values, title: str, y_label: str, height: int = 240, color: str = Category10[3][1]):
    v = as_numpy(values).reshape(-1)
    segs = [str(i) for i in range(len(v))]
    p = _figure(title, height=height, x_range=segs, x_axis_label="segment", y_axis_label=y_label)
    p.vbar(x=segs, top=v, width=0.8, color=color)
    p.add_tools(HoverTool(tooltips=[("segment", "@x"), (y_label, "@top{0.00000}")]))
    return p


# --- training curves ----------------------------------------------------------------------------------
def curve_figure(source: ColumnDataSource, y: str, title: str, x: str = "step", height: int = 220,
                 color: str = Category10[10][0], legend: str | None = None, fig=None):
    p = fig if fig is not None else _figure(title, height=height, x_axis_label=x, y_axis_label=y)
    kw = {"legend_label": legend} if legend else {}
    p.line(x=x, y=y, source=source, line_width=2, color=color, **kw)
    return p


# --- concept map --------------------------------------------------------------------------------------
def pca_2d(vectors) -> np.ndarray:
    """(n, dim) -> (n, 2) by PCA (torch.pca_lowrank on the centred vectors)."""
    x = torch.as_tensor(as_numpy(vectors), dtype=torch.float32)
    if x.shape[0] < 3:
        return np.zeros((x.shape[0], 2), dtype=np.float32)
    x = x - x.mean(dim=0, keepdim=True)
    _, _, v = torch.pca_lowrank(x, q=2, center=False, niter=4)
    return (x @ v[:, :2]).numpy()


def concept_map(xy: np.ndarray, texts: list[str], docs: list, height: int = 420):
    docs = np.asarray(docs)
    _, doc_code = np.unique(docs.astype(str), return_inverse=True)
    colors = np.asarray(Category20[20], dtype=object)[doc_code % 20]
    source = ColumnDataSource(dict(x=xy[:, 0], y=xy[:, 1], text=[t[:160] for t in texts], doc=docs.astype(str),
                                   color=colors))
    p = _figure(f"concept map: {len(texts)} encoded sentences (PCA)", height=height, x_axis_label="PC 1",
                y_axis_label="PC 2")
    p.scatter(x="x", y="y", color="color", size=5, alpha=0.7, source=source)
    p.add_tools(HoverTool(tooltips=[("doc", "@doc"), ("sentence", "@text")]))
    return p
