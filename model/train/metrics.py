"""A run's ``metrics.jsonl``: one JSON object per train step and per evaluation, appended as they happen.

``read_metrics`` reads them all; ``MetricsTail`` follows a live run, parsing only what was appended.
Both ``runs`` (the run folder) and ``summary`` (best held-out figures) read through here, so neither
imports the other to get at the records.
"""
from __future__ import annotations

import json
from pathlib import Path

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: str | Path, split: str | None = None) -> list[dict]:
    """All metric records of a run (``split`` "train" or "eval" filters); a half-written last line is skipped."""
    return MetricsTail(run_dir, split).read()


class MetricsTail:
    """Follows a run's ``metrics.jsonl``: each ``read()`` parses only the lines appended since the last one.

    A dashboard polls a live run every second; re-reading the whole file each time would cost O(steps)
    per poll. A half-written last line is left for the next read. When the file is replaced (a resumed
    run rewrites it without the steps after its checkpoint) ``read()`` starts over from its first line
    and sets ``restarted``, so the reader can drop what it had.
    """

    def __init__(self, run_dir: str | Path, split: str | None = None):
        self.path = Path(run_dir) / METRICS_FILE
        self.split = split
        self.restarted = False
        self._offset = 0
        self._file_id: tuple[int, int] | None = None  # (device, inode) of the file read so far

    def read(self) -> list[dict]:
        """The new complete records (all of them on the first call or after the file was replaced)."""
        self.restarted = False
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self.restarted = self._offset > 0
            self._offset, self._file_id = 0, None
            return []
        file_id = (st.st_dev, st.st_ino)
        if (self._file_id is not None and file_id != self._file_id) or st.st_size < self._offset:
            self.restarted, self._offset = True, 0
        self._file_id = file_id
        if st.st_size == self._offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read(st.st_size - self._offset)
        end = chunk.rfind(b"\n") + 1  # complete lines only
        self._offset += end
        records = []
        for line in chunk[:end].splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line broken by a crash mid-write (the next one starts clean)
            if self.split is None or rec.get("split") == self.split:
                records.append(rec)
        return records
