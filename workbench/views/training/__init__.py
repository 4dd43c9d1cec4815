"""The Training view and its parts.

    form.py         RunForm / SpecForm: widgets built from the config schema (model.schema.Spec)
    monitor.py      RunMonitor: the UI-free "follow a run" state machine (no Panel)
    curves.py       LiveCurves: the followed run's curves (one ColumnDataSource)
    runs_table.py   RunsTable: list_runs as a table patched cell by cell; the user's selection
    compare.py      RunComparison: two runs on one chart
    checkpoints.py  CheckpointPicker: the model the States, Routing and Leakage views inspect
    view.py         TrainingView: puts them together; start / stop / resume
"""
from workbench.views.training.view import TrainingView

__all__ = ["TrainingView"]
