"""A log output that refuses lines: counted, reported once per episode, never raised."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Iterator

import pytest
import structlog

from monitor import log_output
from monitor.log_output import LogOutput, failing_reason, write_errors
from monitor.logs import configure_logging


@pytest.fixture(autouse=True)
def _forget_the_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """The failing outputs made here must not make later tests' daemons unready."""
    monkeypatch.setattr(log_output, "_current", None)


class FlakyStream(io.StringIO):
    """An in-memory stream that fails with ``error`` while ``broken`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.broken: OSError | None = None

    def write(self, text: str) -> int:
        if self.broken is not None:
            raise self.broken
        return super().write(text)


@pytest.fixture
def closed_pipe() -> Iterator[io.TextIOWrapper]:
    """The write end of a pipe whose reader has gone, as ``| head -1`` leaves stdout."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "w") as stream:
        yield stream


@pytest.fixture
def dev_full() -> Iterator[io.TextIOWrapper]:
    """A file on a full disk: every write fails with ENOSPC."""
    with open("/dev/full", "w", encoding="utf-8") as stream:
        yield stream


@pytest.mark.parametrize(
    ("fixture", "error"), [("closed_pipe", "BrokenPipeError"), ("dev_full", "No space left")]
)
def test_lines_a_dead_output_refuses_are_counted_and_reported_once_not_raised(
    fixture: str, error: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = request.getfixturevalue(fixture)
    errors_before = write_errors()
    configure_logging("info", "json", stream=stream)
    for number in range(3):
        structlog.get_logger("t").error("alert", number=number)
    assert write_errors() - errors_before == 3
    reason = failing_reason()
    assert reason is not None
    assert error in reason
    (report,) = capsys.readouterr().err.splitlines()
    assert report.startswith("atlas-endpoint-monitor: cannot write log lines (alerts included)")
    assert error in report


def test_an_output_that_works_again_ends_the_episode_and_says_how_many_were_lost(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream = FlakyStream()
    output = LogOutput(stream)
    stream.broken = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    output.write_line("lost 1")
    output.write_line("lost 2")
    stream.broken = None
    output.write_line("written")
    stream.broken = BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))
    output.write_line("lost 3")
    assert stream.getvalue() == "written\n"
    assert failing_reason() == "BrokenPipeError: [Errno 32] Broken pipe"
    reports = capsys.readouterr().err.splitlines()
    assert len(reports) == 3, reports
    assert "No space left on device" in reports[0]
    assert reports[1].endswith("again; 2 were lost meanwhile")
    assert "Broken pipe" in reports[2]
