"""Leakage view: perturb one segment of a packed row and see what it changes in every other segment, per
layer (``model.leakage.perturbation_report``, judged by the audit's own tolerance); the leakage audit's
verdict as a PASS / FAIL badge.
The "leaky" switch inspects the same weights with resets off, which the audit must fail (red).
"""
from __future__ import annotations

import numpy as np
import panel as pn
import param
from model.leakage import audit, perturbation_report
from workbench import plots, services
from workbench.plots import layer_names
from workbench.state import WorkbenchState
from workbench.views.base import LazyView, leaky_toggle

BADGE = ('<span class="wb-badge {cls}" style="display:inline-block;padding:4px 14px;border-radius:6px;'
         'font-weight:bold;font-size:1.3em;color:white;background:{bg}">{text}</span>'
         '<span class="wb-badge-source" style="margin-left:8px;color:#555;font-size:0.9em">{source}</span>')


class LeakageView(LazyView):
    segment = param.Integer(default=0, bounds=(0, None), doc="segment of the row to perturb")
    leaky = param.Boolean(default=False, doc="inspect the same weights with isolate_segments=False")

    def __init__(self, state: WorkbenchState, **params):
        super().__init__(**params)
        self.state = state
        self.effect = None     # (n_layers+1, S) max |Δ| drawn now
        self.perturbation = None  # the model.leakage.PerturbationEffect drawn now (effect, tolerance, verdict)
        self.report = None     # the last AuditReport
        self.verdict = ""      # "PASS" / "FAIL" / ""
        self.leaks = False     # the heatmap shows a change above the audit's tolerance outside the perturbed segment
        self._job: services.BackgroundJob | None = None
        self._heat = pn.pane.Bokeh(sizing_mode="stretch_width", css_classes=["wb-leakage-heatmap"])
        self._badge = pn.pane.HTML("", css_classes=["wb-leakage-badge"])
        self._summary = pn.pane.Markdown("", css_classes=["wb-leakage-summary"])
        self._checks = pn.pane.Markdown("", css_classes=["wb-leakage-checks"])
        self._run = pn.widgets.Button(label="Run leakage audit", color="primary", width=180,
                                      css_classes=["wb-leakage-run"])
        self._run.on_click(lambda *_: self.run_audit())
        self._leaky = leaky_toggle(self, "wb-leakage-leaky")
        state.param.watch(lambda *_: self._changed(), ["model", "batch", "row"])
        self._changed()

    def _changed(self):
        # a new row or batch: perturb its first segment (what leaks, leaks forward into the later ones)
        with param.parameterized.discard_events(self):
            self.segment = 0
        self.draw()

    def _model(self):
        return services.leaky_twin(self.state.model) if self.leaky else self.state.model

    @param.depends("segment", "leaky", watch=True)
    def draw(self):
        if not self.should_draw():
            return
        if self.state.batch is None or self.state.model is None:
            self._summary.object = "Pack some data in the **Packing** tab first."
            return
        try:
            values, ids = self.state.row_tensors(self.state.row)
            n_seg = int(ids.max()) + 1
            if not 0 <= self.segment < n_seg:
                raise ValueError(f"segment {self.segment} does not exist: row {self.state.row} has {n_seg} segments "
                                 f"(0..{n_seg - 1})")
            rep = perturbation_report(self._model(), (values, ids), segment=(0, self.segment))
        except ValueError as exc:
            self.state.fail(exc)
            return
        self.perturbation, self.effect = rep, plots.as_numpy(rep.effect)
        worst, tol = rep.worst, rep.tol_max
        title = (f"max |Δ| in each segment when segment {self.segment} of row {self.state.row} is replaced by noise"
                 + (" — RESETS OFF (leaky)" if self.leaky else ""))
        self._heat.object = plots.leak_heatmap(rep.effect, rep.tol, rep.flipped, layer_names(len(rep.layers) - 1),
                                               title)
        leaking = plots.as_numpy(rep.leaking)
        n_above, n_cells = int(leaking.sum()), leaking.size - leaking.shape[0]
        verdict = (f"it **leaks**: {n_above} of {n_cells} cells of other segments are above the audit's tolerance "
                   f"(up to {tol:.2g}; coloured)" if rep.leaks else
                   f"within the audit's fp32 tolerance (up to {tol:.2g}): nothing crosses a boundary")
        self._summary.object = f"Largest change in any **other** segment: **{worst:.3g}**: {verdict}."
        self.leaks = rep.leaks
        self.report = None
        self._checks.object = ""
        # the badge is the verdict of what is drawn (the perturbation check), until an audit of it runs
        self._set_badge(rep.verdict, "this perturbation (the audit's boundary-flip rule)")

    def run_audit(self, wait: bool = False) -> None:
        """Start ``model.leakage.audit`` on this model (or its leaky twin) in the background."""
        if self._job is not None and not self._job.finished:
            self.state.notify("an audit is already running", "warning")
            return
        model = self._model()
        batch, target = None, None
        if self.state.batch is not None:
            values, ids = self.state.row_tensors(self.state.row)
            if int(ids.max()) >= 1:  # audit this row, flipping the chosen segment
                batch, target = (values, ids), (0, min(self.segment, int(ids.max())))
        self._badge.object = BADGE.format(cls="wb-running", bg="#777", text="auditing…", source="")
        self._job = services.BackgroundJob(lambda _progress: audit(model, batch, target=target), name="audit").start()
        if wait:
            self._job.wait()
            self.poll()

    def poll(self) -> None:
        job = self._job
        if job is None or not job.finished:
            return
        self._job = None
        if job.error is not None:
            self._set_badge(self.perturbation.verdict if self.perturbation is not None else "",
                            "this perturbation (the audit could not run)")
            self.state.notify(f"leakage audit failed to run: {job.error}", "error")
            return
        self.report = job.result
        n = len(self.report.checks)
        self._set_badge("PASS" if self.report.passed else "FAIL", f"full audit: {n} checks"
                        + ("" if self.report.passed else f", {sum(not c['passed'] for c in self.report.checks)} failed"))
        failed = [c["check"] for c in self.report.checks if not c["passed"]]
        lines = ["| check | verdict | max abs Δ | worst layer / op | tol |", "|---|---|---|---|---|"]
        lines += [f"| {c['check']} | {'pass' if c['passed'] else '**FAIL**'} | {c['max_abs_delta']:.3g} | "
                  f"{c['worst_layer']} / {c['worst_op']} | {c['tol']:.1g} |" for c in self.report.checks]
        self._checks.object = "\n".join(lines)
        self.state.notify(f"leakage audit: {self.verdict}" + (f" ({len(failed)} check(s) failed)" if failed else ""),
                          "success" if self.report.passed else "error")

    def _set_badge(self, verdict: str, source: str = "") -> None:
        self.verdict = verdict
        if verdict == "PASS":
            self._badge.object = BADGE.format(cls="wb-pass", bg="#2e7d32", text="PASS", source=source)
        elif verdict == "FAIL":
            self._badge.object = BADGE.format(cls="wb-fail", bg="#c62828", text="FAIL", source=source)
        else:
            self._badge.object = BADGE.format(cls="wb-unknown", bg="#9e9e9e", text="not audited", source=source)

    def __panel__(self):
        return pn.Column(
            pn.Row(pn.widgets.IntInput.from_param(self.state.param.row, label="packed row", width=130,
                                                  css_classes=["wb-leakage-row"]),
                   pn.widgets.IntInput.from_param(self.param.segment, label="segment to perturb", width=150,
                                                  css_classes=["wb-leakage-segment"]),
                   self._leaky,
                   self._run, self._badge),
            self._summary, self._checks, self._heat,
            sizing_mode="stretch_width", css_classes=["wb-leakage"],
        )
