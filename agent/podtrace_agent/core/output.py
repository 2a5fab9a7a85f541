"""What both commands print: JSON lines on a stream, and backend timestamps as
wall-clock time."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, TextIO

Line = dict[str, Any]


class Output:
    """JSON lines to a stream, flushed per line (a pipe reader sees each at once)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, line: Line) -> None:
        self.stream.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.stream.flush()


def wall_time(timestamp_ns: int, offset_ns: int) -> str:
    """A backend timestamp (CLOCK_MONOTONIC ns) as UTC RFC 3339 with microseconds.

    >>> wall_time(1_500, 1_000_000_000)
    '1970-01-01T00:00:01.000001Z'
    """
    moment = datetime.fromtimestamp((timestamp_ns + offset_ns) / 1e9, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
