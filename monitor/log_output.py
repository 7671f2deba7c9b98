"""Writing log lines so that a dead reader or a full disk can never stop the daemon.

stdout is often a pipe or a file. When its reader has gone (``| head -1``) or its disk is
full, a write fails (EPIPE, ENOSPC, ...). Raised into the poller, that aborted every cycle
with something to say, and alerts, state updates and metrics with it. Here a line that
cannot be written is lost and counted instead: the rest of the daemon carries on and says
so through what still works, its metrics (``atlas_monitor_log_write_errors_total``), its
readiness (``/readyz`` answers 503 while lines cannot be written, see monitor.server) and
one line on stderr per episode, from the first failure to the next successful write.

Lines go straight to the file descriptor, one ``os.write`` per line, never through Python's
buffer: a failed write would stay in that buffer, be retried in front of every later line
and, at exit, turn a clean stop into "Exception ignored ... BrokenPipeError" and exit 120.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import TextIO

_write_errors = 0
"""Lines lost in this process, whatever output they were meant for."""
_current: LogOutput | None = None
"""The output configured last: the one whose health /readyz reports."""

PROGRAM = "atlas-endpoint-monitor"


def write_errors() -> int:
    """Log lines this process could not write, since it started."""
    return _write_errors


def failing_reason() -> str | None:
    """Why the log output's latest write failed, or None while it works."""
    return _current.failing if _current is not None else None


class LogOutput:
    """Whole lines to one stream; a line that cannot be written is counted, never raised."""

    def __init__(self, stream: TextIO) -> None:
        global _current
        self._stream = stream
        self._name = getattr(stream, "name", None) or "the log stream"
        self._encoding = getattr(stream, "encoding", None) or "utf-8"
        self._fd = _file_descriptor(stream)
        self.failing: str | None = None
        self._lost_in_episode = 0
        _current = self

    def write_line(self, line: str) -> None:
        global _write_errors
        try:
            self._write(line + "\n")
        except (OSError, ValueError) as error:  # ValueError: the stream was closed
            _write_errors += 1
            self._lost_in_episode += 1
            if self.failing is None:
                self.failing = f"{type(error).__name__}: {error}"
                _tell_stderr(
                    f"cannot write log lines (alerts included) to {self._name}: {self.failing};"
                    " they are lost and counted in atlas_monitor_log_write_errors_total, and"
                    " /readyz answers 503, until writing works again"
                )
            return
        if self.failing is not None:
            _tell_stderr(
                f"log lines are written to {self._name} again;"
                f" {self._lost_in_episode} were lost meanwhile"
            )
            self.failing = None
            self._lost_in_episode = 0

    def _write(self, text: str) -> None:
        if self._fd is None:
            self._stream.write(text)
            self._stream.flush()
            return
        data = memoryview(text.encode(self._encoding, "backslashreplace"))
        while data:
            data = data[os.write(self._fd, data) :]


class LineLogger:
    """structlog's logger for a LogOutput: every level writes the rendered line."""

    def __init__(self, output: LogOutput) -> None:
        self._output = output

    def msg(self, message: str) -> None:
        self._output.write_line(message)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


class LineHandler(logging.Handler):
    """The standard logging side (libraries' logs) of a LogOutput."""

    def __init__(self, output: LogOutput) -> None:
        super().__init__()
        self._output = output

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._output.write_line(line)


def _file_descriptor(stream: TextIO) -> int | None:
    """The stream's descriptor, once what its buffer holds is out; None when it has none
    (an in-memory stream), so lines go through its ``write``."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return None
    with contextlib.suppress(OSError, ValueError):
        stream.flush()
    return fd


def _tell_stderr(message: str) -> None:
    """Best effort: stderr may be the failing output itself."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"{PROGRAM}: {message}\n")
        sys.stderr.flush()
