"""Bokeh figure builders. Each takes model-layer objects (PackedBatch, Trace, RoutingStats, tensors
from the leakage audit, run metrics) and draws them; none computes model things.

Large layouts stay fast by drawing with one ColumnDataSource and one glyph per figure.
"""
from __future__ import annotations

import numpy as np
import torch
from bokeh.models import (BasicTicker, ColorBar, ColumnDataSource, CustomJSHover, FixedTicker, HoverTool,
                          Legend, LegendItem, LinearColorMapper, LogColorMapper, LogTicker, Range1d, Span)
from bokeh.palettes import Category10, Category20, RdBu11, Viridis256, YlOrRd9
from bokeh.plotting import figure

PAD_COLOR = "#c8c8c8"  # padding is grey in every layout
# Category20 without its two greys, so that no segment can be mistaken for padding
SEGMENT_PALETTE = tuple(c for c in Category20[20] if c not in ("#7f7f7f", "#c7c7c7"))
# Layouts colour a segment by its index inside its row (0, 1, 2, ...): neighbours in a row never share a
# colour, and the legend says which is which. Ten strong colours, none of them grey; then they cycle.
ROW_SEGMENT_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
                       "#17becf", "#393b79")
# leakage: at or below the audit's tolerance a cell is neutral; above it, a warm colour, darker the larger the leak
NEUTRAL_COLOR = "#f4f4f4"
FLIPPED_COLOR = "#9e9e9e"
LEAK_PALETTE = tuple(YlOrRd9[::-1][3:])  # orange .. dark red: even the first colour is plainly coloured
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"
DENSE_ROWS = 120  # above this many rows a layout drops its white outlines (they would wash the colours out)


def _figure(title: str, height: int = 300, **kw):
    kw.setdefault("sizing_mode", "stretch_width")
    return figure(title=title, height=height, tools=TOOLS, toolbar_location="right", **kw)


def swatch_legend(p, labels: list[str], colors: list[str], place: str = "right", **kw) -> None:
    """A legend of colour swatches beside the plot (never over it): ONE extra renderer that draws nothing
    (its points are NaN) and carries a swatch per label."""
    src = ColumnDataSource(dict(x=[np.nan] * len(labels), y=[np.nan] * len(labels), label=list(labels),
                                color=list(colors)))
    r = p.scatter(x="x", y="y", marker="square", size=11, color="color", line_color="#888", source=src)
    kw.setdefault("label_text_font_size", "8pt")
    kw.setdefault("title_text_font_size", "8pt")
    legend = Legend(items=[LegendItem(label=lab, renderers=[r], index=i) for i, lab in enumerate(labels)],
                    spacing=0, padding=4, glyph_height=12, glyph_width=12, **kw)
    p.add_layout(legend, place)


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


def pack_layout_data(batch, names=None) -> dict:
    """Columns for the layout quads: one entry per segment, then one grey entry per row with padding.

    A segment is coloured by its index inside its row (``ROW_SEGMENT_PALETTE``), so neighbours differ.
    ``names`` (one per sequence, in input order) names each segment's document in the tooltips.
    In ``single`` mode each row is stepped alone, without padding (the plan's utilization is 1.0): no
    padding is drawn, so the picture and the figure agree.
    """
    seg = segment_table_array(batch)
    seq, chunk, row, start, length = seg.T
    rows, L = batch.segment_ids.shape[:2]
    used = (as_numpy(batch.segment_ids) >= 0).sum(axis=1)
    pad_rows = np.flatnonzero(used < L) if batch.mode != "single" else np.zeros(0, dtype=np.int64)
    # the segment index inside its row: pieces are ordered by (row, start)
    first = np.r_[0, np.flatnonzero(np.diff(row)) + 1] if len(row) else np.zeros(0, dtype=np.int64)
    in_row = np.arange(len(row)) - np.repeat(first, np.diff(np.r_[first, len(row)])) if len(row) else row
    colors = np.asarray(ROW_SEGMENT_PALETTE, dtype=object)[in_row % len(ROW_SEGMENT_PALETTE)]
    n_chunks = np.bincount(seq, minlength=int(seq.max()) + 1 if len(seq) else 0)[seq] if len(seq) else seq
    if names is None:
        doc = np.asarray([f"sequence {i}" for i in seq], dtype=object)
    else:
        doc = np.asarray([str(names[i]) for i in seq], dtype=object)
    piece = np.asarray([f"{c + 1} of {n}" for c, n in zip(chunk, n_chunks)], dtype=object)
    n_pad = len(pad_rows)
    dense = rows > DENSE_ROWS
    gap = 0.0 if dense else 0.05
    return dict(
        left=np.concatenate([start, used[pad_rows]]).astype(float),
        right=np.concatenate([start + length, np.full(n_pad, L)]).astype(float),
        bottom=np.concatenate([row, pad_rows]).astype(float) + gap,
        top=np.concatenate([row, pad_rows]).astype(float) + 1 - gap,
        color=np.concatenate([colors, np.full(n_pad, PAD_COLOR, dtype=object)]),
        kind=np.concatenate([np.full(len(seq), "segment", dtype=object), np.full(n_pad, "padding", dtype=object)]),
        seq=np.concatenate([seq, np.full(n_pad, -1)]),
        chunk=np.concatenate([chunk, np.full(n_pad, -1)]),
        row=np.concatenate([row, pad_rows]),
        segment=np.concatenate([in_row, np.full(n_pad, -1)]).astype(np.int64),
        segment_name=np.concatenate([np.asarray([str(i) for i in in_row], dtype=object),
                                     np.full(n_pad, "padding", dtype=object)]),
        doc=np.concatenate([doc, np.full(n_pad, "(padding)", dtype=object)]),
        piece=np.concatenate([piece, np.full(n_pad, "", dtype=object)]),
        positions=np.concatenate([np.asarray([f"{a}..{a + n - 1}" for a, n in zip(start, length)], dtype=object),
                                  np.asarray([f"{u}..{L - 1}" for u in used[pad_rows]], dtype=object)]),
        length=np.concatenate([length, L - used[pad_rows]]),
    )


def pack_layout_figure(batch, title: str, height: int = 360, names=None):
    """Rows x positions; each segment coloured by its index in its row (legend), padding grey. One glyph."""
    rows, L = batch.segment_ids.shape[:2]
    data = pack_layout_data(batch, names)
    source = ColumnDataSource(data)
    p = _figure(title, height=height, x_range=Range1d(0, L), y_range=Range1d(rows, 0),
                x_axis_label="position", y_axis_label="row")
    dense = rows > DENSE_ROWS
    r = p.quad(left="left", right="right", bottom="bottom", top="top", fill_color="color",
               line_color=None if dense else "white", line_width=0.5, source=source)
    p.add_tools(HoverTool(renderers=[r], tooltips=[("row", "@row"), ("segment", "@segment_name"),
                                                   ("document", "@doc"), ("positions", "@positions"),
                                                   ("length", "@length"), ("piece", "@piece")]))
    # the legend: one swatch per colour in use (segment index in its row), and padding when drawn
    top = int(data["segment"].max()) if len(data["segment"]) else -1
    n = len(ROW_SEGMENT_PALETTE)
    labels = [f"segment {i}" + (f", {i + n}, …" if top >= i + n else "") for i in range(min(n, top + 1))]
    colors = list(ROW_SEGMENT_PALETTE[:len(labels)])
    if (data["kind"] == "padding").any():
        labels, colors = labels + ["padding"], colors + [PAD_COLOR]
    if labels:
        swatch_legend(p, labels, colors, "right", title="in its row")
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
            nan_color: str = "#9e9e9e", x_segments=None, mapper=None, color_bar_title: str | None = None):
    """One image glyph of ``matrix`` (Y, X); ``boundaries`` are x positions marked by dashed lines.

    ``x_names``/``y_names`` label discrete columns/rows at their centres; NaN cells get ``nan_color``.
    The tooltip names the cell: ``y_label`` by its name, ``x_label`` by its name or index, and, with
    ``x_segments`` (one segment id per column), the segment the position lies in.
    ``mapper`` replaces the default linear colour mapper (e.g. a fixed scale comparable across models).
    """
    m = as_numpy(matrix).astype(np.float64)
    ny, nx = m.shape
    finite = m[np.isfinite(m)]
    low = float(finite.min()) if low is None and finite.size else (low or 0.0)
    high = float(finite.max()) if high is None and finite.size else (high if high is not None else 1.0)
    if high <= low:
        high = low + 1e-9
    if mapper is None:
        mapper = LinearColorMapper(palette=palette, low=low, high=high, nan_color=nan_color)
    p = _figure(title, height=height, x_range=Range1d(0, nx), y_range=Range1d(0, ny), x_axis_label=x_label,
                y_axis_label=y_label)
    source = ColumnDataSource(dict(image=[m], x=[0], y=[0], dw=[nx], dh=[ny]))
    p.image(image="image", x="x", y="y", dw="dw", dh="dh", color_mapper=mapper, source=source)
    x_hover = _name_hover(x_names)
    x_tip = x_label
    if x_segments is not None:  # "12 · segment 3": the position and the segment it lies in
        x_hover = _name_hover(x_names, segments=[int(v) for v in as_numpy(x_segments).reshape(-1)])
        x_tip = f"{x_label} · segment"
    p.add_tools(HoverTool(tooltips=[(y_label, "$y{custom}"), (x_tip, "$x{custom}"), (value_name, "@image{0.0000}")],
                          formatters={"$y": _name_hover(y_names), "$x": x_hover}))
    if y_names is not None:
        p.yaxis.ticker = [i + 0.5 for i in range(ny)]
        p.yaxis.major_label_overrides = {i + 0.5: name for i, name in enumerate(y_names)}
    if x_names is not None:
        p.xaxis.ticker = [i + 0.5 for i in range(nx)]
        p.xaxis.major_label_overrides = {i + 0.5: name for i, name in enumerate(x_names)}
    for b in boundaries:
        p.add_layout(Span(location=float(b), dimension="height", line_color="white", line_dash="dashed",
                          line_width=1.5))
    p.add_layout(ColorBar(color_mapper=mapper, ticker=BasicTicker(), width=10, title=color_bar_title), "right")
    p.xgrid.visible = p.ygrid.visible = False
    return p


def _name_hover(names, segments=None) -> CustomJSHover:
    """A tooltip formatter for an image coordinate: the cell's name (or index); with ``segments`` (one id
    per column) also the segment of that position ("padding" for a negative id)."""
    code = ("const i = Math.floor(value); "
            "const n = names.length ? (names[i] === undefined ? '' : names[i]) : String(i); "
            "if (!segs.length) return n; const s = segs[i]; "
            "return s === undefined ? n : n + ' · ' + (s < 0 ? 'padding' : 'segment ' + s);")
    return CustomJSHover(code=code, args=dict(names=list(names or []), segs=list(segments or [])))


# --- leakage ------------------------------------------------------------------------------------------
def leak_ratio(effect, tol) -> np.ndarray:
    """``effect / tol`` per cell (tol per layer, shape (Y,)): how many times the audit's tolerance."""
    e = as_numpy(effect).astype(np.float64)
    t = np.maximum(as_numpy(tol).astype(np.float64).reshape(-1, 1), 1e-30)
    return e / t


def leak_colors(ratio) -> np.ndarray:
    """The colour of each cell: neutral at or below the tolerance (ratio <= 1), else a warm colour on a log
    scale of the ratio (1x .. 1e4x and above), NaN (the perturbed segment) grey."""
    r = np.asarray(ratio, dtype=np.float64)
    out = np.full(r.shape, NEUTRAL_COLOR, dtype=object)
    above = np.isfinite(r) & (r > 1.0)
    steps = np.clip(np.log10(r[above]) / 4.0, 0.0, 1.0)  # 4 decades over the palette
    out[above] = np.asarray(LEAK_PALETTE, dtype=object)[np.minimum((steps * len(LEAK_PALETTE)).astype(int),
                                                                    len(LEAK_PALETTE) - 1)]
    out[~np.isfinite(r)] = FLIPPED_COLOR
    return out


def leak_heatmap(effect, tol, flipped: int, layers: list[str], title: str, height: int = 330):
    """Layers x segments of a ``PerturbationEffect``: one rect per cell, coloured by ``leak_colors`` (the
    flipped segment grey), a tooltip naming layer, segment, max |Δ|, the tolerance and the verdict."""
    e = as_numpy(effect).astype(np.float64)
    t = as_numpy(tol).astype(np.float64).reshape(-1)
    ny, nx = e.shape
    ratio = leak_ratio(e, t)
    ratio[:, flipped] = np.nan
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    verdict = np.where(np.isnan(ratio), "the perturbed segment", np.where(ratio > 1, "LEAK (above tolerance)",
                                                                         "ok (within tolerance)"))
    source = ColumnDataSource(dict(
        x=xx.ravel() + 0.5, y=yy.ravel() + 0.5, color=leak_colors(ratio).ravel(),
        layer=np.asarray([layers[i] for i in yy.ravel()], dtype=object), segment=xx.ravel(),
        delta=e.ravel(), tol=t[yy.ravel()], ratio=np.nan_to_num(ratio, nan=0.0).ravel(), verdict=verdict.ravel()))
    p = _figure(title, height=height, x_range=Range1d(0, nx), y_range=Range1d(0, ny), x_axis_label="segment",
                y_axis_label="layer")
    r = p.rect(x="x", y="y", width=1, height=1, fill_color="color", line_color="white", line_width=1,
               source=source)
    p.add_tools(HoverTool(renderers=[r], tooltips=[("layer", "@layer"), ("segment", "@segment"),
                                                   ("max |Δ|", "@delta{0.000e0}"), ("tolerance", "@tol{0.0e0}"),
                                                   ("× tolerance", "@ratio{0.0}"), ("", "@verdict")]))
    p.yaxis.ticker = FixedTicker(ticks=[i + 0.5 for i in range(ny)])
    p.yaxis.major_label_overrides = {i + 0.5: name for i, name in enumerate(layers)}
    p.xaxis.ticker = FixedTicker(ticks=[i + 0.5 for i in range(nx)])
    p.xaxis.major_label_overrides = {i + 0.5: str(i) for i in range(nx)}
    mapper = LogColorMapper(palette=list(LEAK_PALETTE), low=1.0, high=1e4, low_color=NEUTRAL_COLOR)
    # below the plot, across its width: a vertical bar at the right cut its title off (wider than the bar)
    p.add_layout(ColorBar(color_mapper=mapper, ticker=LogTicker(), orientation="horizontal", height=10,
                          title="max |Δ| ÷ tolerance (≤ 1: neutral)", title_text_font_size="9pt",
                          title_standoff=4, padding=6), "below")
    swatch_legend(p, ["within tolerance", "above tolerance", "perturbed segment"],
                  [NEUTRAL_COLOR, LEAK_PALETTE[2], FLIPPED_COLOR], "below", orientation="horizontal")
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
    renderers = p.vbar_stack(names, x="segment", width=0.8, color=palette, source=ColumnDataSource(data))
    for r, name in zip(renderers, names):
        p.add_tools(HoverTool(renderers=[r], tooltips=[("segment", "@segment"), ("expert", name.split()[-1]),
                                                       ("share", f"@{{{name}}}{{0.0%}}")]))
    # beside the plot, never over the bars
    p.add_layout(Legend(items=[LegendItem(label=n, renderers=[r]) for n, r in zip(names, renderers)],
                        label_text_font_size="8pt", spacing=0, padding=4), "right")
    return p


def load_mapper(n_experts: int) -> LinearColorMapper:
    """A fixed diverging scale for expert load: white at the ideal 1/E, blue below, red above, from 0 to 2/E
    (clipped): the same colours mean the same imbalance for every model with E experts."""
    ideal = 1.0 / n_experts
    return LinearColorMapper(palette=list(RdBu11[::-1]), low=0.0, high=2 * ideal, high_color="#67001f")


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
    """(n, dim) -> (n, 2) by PCA (``model.concepts.projection``)."""
    from model.concepts.projection import pca_2d as _pca

    return _pca(as_numpy(vectors))


MAP_GROUPS = 19  # the largest groups get a colour each; the rest share "other"
STATUS_COLORS = {"accepted": "#2ca02c", "pending": "#ff7f0e", "rejected": "#d62728"}
STATUS_ORDER = ("pending", "accepted", "rejected")  # the curation order: the map legend follows it
MAP_COLUMNS = ("x", "y", "text", "doc", "status", "group", "color", "id")
MAP_AXES = {"pca": ("PC 1", "PC 2"), "umap": ("UMAP 1", "UMAP 2")}


def concept_map_figure(height: int = 460):
    """The concept map, built ONCE per view and then only updated (``update_concept_map``): its points and
    hits sources, renderers and legend keep their identity, so an update never references a model the
    browser has not been sent yet.

    Points are coloured by their "color" column, with a legend beside the plot from the "group" column (in the
    order of the rows: ``concept_map_data`` sorts them); hover gives the text, document and status; box/lasso/tap
    select points; the renderer named "hits" rings the search hits.
    """
    points = ColumnDataSource({c: [] for c in MAP_COLUMNS}, name="wb-map-points")
    hits = ColumnDataSource(dict(x=[], y=[], text=[]), name="wb-map-hits")
    p = figure(title="concept map: no encoded sentences yet", height=height, sizing_mode="stretch_width",
               tools="pan,wheel_zoom,box_select,lasso_select,tap,reset,save", active_drag="box_select",
               toolbar_location="right", x_axis_label=MAP_AXES["pca"][0], y_axis_label=MAP_AXES["pca"][1])
    pts = p.scatter(x="x", y="y", color="color", size=6, alpha=0.75, source=points, legend_field="group",
                    selection_color="color", selection_alpha=1.0, selection_line_color="black",
                    nonselection_alpha=0.12, name="points")
    p.scatter(x="x", y="y", size=13, fill_color=None, line_color="black", line_width=2.5, name="hits",
              source=hits, legend_label="search hit")
    p.add_tools(HoverTool(renderers=[pts], tooltips=[("sentence", "@text"), ("document", "@doc"),
                                                     ("status", "@status"), ("id", "@id")]))
    legend = p.legend[0]
    p.center.remove(legend)
    legend.label_text_font_size = "8pt"
    legend.spacing = 0
    legend.click_policy = "none"
    p.add_layout(legend, "right")
    return p


def concept_map_data(xy: np.ndarray, texts: list[str], groups, ids=None, group_name: str = "document",
                     docs=None, status=None) -> dict:
    """The points source's columns, rows in legend order: by document (the order the documents come in, the
    largest MAP_GROUPS with a colour each, then "other (N documents)") or by status (pending, accepted,
    rejected). BokehJS lists a ``legend_field``'s values in the order they first appear, so the row order is
    the legend's order."""
    groups = np.asarray(groups, dtype=object).astype(str)
    n = len(texts)
    if group_name == "status":
        color_of = {g: STATUS_COLORS.get(g, "#7f7f7f") for g in groups}
        label_of = {g: g for g in groups}
        rank_of = {g: (STATUS_ORDER.index(g) if g in STATUS_ORDER else len(STATUS_ORDER)) for g in groups}
    else:
        uniq, first, counts = np.unique(groups, return_index=True, return_counts=True)
        top = set(uniq[np.argsort(-counts, kind="stable")][:MAP_GROUPS].tolist())
        in_order = [g for g in uniq[np.argsort(first, kind="stable")] if g in top]  # document order
        color_of = {g: SEGMENT_PALETTE[i % len(SEGMENT_PALETTE)] for i, g in enumerate(in_order)}
        n_other = len(uniq) - len(in_order)
        label_of = {g: (g if g in color_of else f"other ({n_other} documents)") for g in uniq}
        rank_of = {g: (in_order.index(g) if g in color_of else len(in_order)) for g in uniq}
        color_of = {g: color_of.get(g, "#bdbdbd") for g in uniq}
    order = np.argsort(np.asarray([rank_of[g] for g in groups], dtype=np.int64), kind="stable") if n else \
        np.zeros(0, dtype=np.int64)
    docs = groups if docs is None else np.asarray(docs, dtype=object).astype(str)
    status = np.asarray([""] * n if status is None else list(status), dtype=object)
    ids = np.arange(n) if ids is None else np.asarray(ids)
    xy = np.asarray(xy, dtype=np.float32).reshape(n, 2)
    return dict(x=xy[order, 0], y=xy[order, 1], text=[texts[i][:200] for i in order], doc=list(docs[order]),
                status=list(status[order]), group=[label_of[g] for g in groups[order]],
                color=[color_of[g] for g in groups[order]], id=[int(i) for i in ids[order]])


def update_concept_map(p, data: dict, title: str, projection: str = "pca") -> None:
    """Put ``concept_map_data`` into a ``concept_map_figure``: new data, title and axis labels, no new model."""
    p.select_one({"name": "points"}).data_source.data = data
    p.title.text = title
    x_label, y_label = MAP_AXES[projection]
    p.xaxis[0].axis_label, p.yaxis[0].axis_label = x_label, y_label


def concept_map(xy: np.ndarray, texts: list[str], groups, height: int = 460, ids=None, group_name: str = "document",
                docs=None, status=None):
    """A concept map figure filled once (``concept_map_figure`` + ``update_concept_map``), for notebooks."""
    p = concept_map_figure(height)
    update_concept_map(p, concept_map_data(xy, texts, groups, ids=ids, group_name=group_name, docs=docs,
                                           status=status),
                       f"concept map: {len(texts)} encoded sentences (PCA), coloured by {group_name}")
    return p


def _store_stats_data(stats: dict) -> dict:
    labels = ["accepted", "pending", "rejected", "encoded"] + [f"failed: {k}" for k in (stats.get("rejections") or {})]
    values = [stats.get("accepted", 0), stats.get("pending", 0), stats.get("rejected", 0), stats.get("encoded", 0)]
    values += list((stats.get("rejections") or {}).values())
    colors = [STATUS_COLORS["accepted"], STATUS_COLORS["pending"], STATUS_COLORS["rejected"], "#1f77b4"]
    colors += ["#e7969c"] * (len(labels) - 4)
    return dict(label=labels, value=values, color=colors)


def store_stats_chart(stats: dict, height: int = 200):
    """Horizontal bars: sentences per status, encoded, and rejected sentences per failed check.

    Built once per view; ``update_store_stats_chart`` changes its data, bars and title in place."""
    data = _store_stats_data(stats)
    p = figure(title="", height=height, width=340, y_range=data["label"][::-1], tools="", toolbar_location=None,
               x_axis_label="sentences")
    src = ColumnDataSource(data, name="wb-store-stats")
    p.hbar(y="label", right="value", height=0.7, color="color", source=src, name="bars")
    p.add_tools(HoverTool(tooltips=[("", "@label"), ("sentences", "@value")]))
    p.ygrid.visible = False
    update_store_stats_chart(p, stats, height)
    return p


def update_store_stats_chart(p, stats: dict, height: int = 200) -> None:
    data = _store_stats_data(stats)
    p.select_one({"name": "bars"}).data_source.data = data
    p.y_range.factors = data["label"][::-1]
    p.title.text = f"{stats.get('sentences', 0)} sentences in {stats.get('documents', 0)} documents"
    p.height = height + 14 * max(0, len(data["label"]) - 4)
