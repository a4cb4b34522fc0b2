"""Logs as the dock agent writes them: one line each on stderr, text for people or JSON lines
for a journal or a collector (`--log-json`; workers the daemon spawns follow it through
$BODYCAM_LOG_JSON)."""

from __future__ import annotations

import json
import logging
import sys

LOG_JSON_ENV = "BODYCAM_LOG_JSON"


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": round(record.created, 6), "level": record.levelname.lower(),
               "logger": record.name, "msg": record.getMessage(), "pid": record.process}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup_logging(level: int, json_lines: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if json_lines else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
