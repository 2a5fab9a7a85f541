"""`podtrace-agent`: the node agent."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point; the subcommands land with the agent issues."""
    print("podtrace-agent: not implemented yet", file=sys.stderr)
    return 2
