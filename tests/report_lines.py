"""A pod's log as the operator reads it: the report lines a StatusReporter wrote."""
from __future__ import annotations

import io
import json

from kubetune_api.wire import REPORT_PREFIX


class ReportLines(io.StringIO):
    """A stream for StatusReporter; `reports()` parses every report line written to it."""

    def reports(self) -> list[dict]:
        return [json.loads(line[len(REPORT_PREFIX):]) for line in self.getvalue().splitlines() if line.startswith(REPORT_PREFIX)]
