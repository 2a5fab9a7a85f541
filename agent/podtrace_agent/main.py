"""`podtrace-agent`: the node agent.

    podtrace-agent standalone [--duration 10s] [--backend auto|bcc|ftrace] [--cgroupfs PATH]
                              [--kubepods PATH] [--no-mount]
        trace every container under kubepods on this node, no cluster needed;
        JSON lines on stdout (see podtrace_agent.standalone)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from podtrace_api.base import parse_duration

BACKENDS = ("auto", "bcc", "ftrace")


def _seconds(text: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _node_flags(parser: argparse.ArgumentParser) -> None:
    """Flags every subcommand that traces shares (standalone now, run later)."""
    parser.add_argument(
        "--backend", choices=BACKENDS, default="auto",
        help="tracing backend (default auto: bcc when it can compile here, else ftrace)",
    )
    parser.add_argument(
        "--cgroupfs", metavar="PATH",
        help="the host's cgroupfs when the agent runs in a container, e.g. /host/sys/fs/cgroup "
             "(its cgroup2 hierarchy: PATH itself, or PATH/unified on hybrid hosts)",
    )
    parser.add_argument(
        "--kubepods", metavar="PATH",
        help="the kubepods cgroup relative to the cgroup2 hierarchy (default: found; with "
             "several, the one with the most pods)",
    )
    parser.add_argument(
        "--no-mount", dest="allow_mount", action="store_false", default=None,
        help="never mount tracefs (by default it is mounted at /sys/kernel/tracing when "
             "missing and the agent runs as root)",
    )


def _standalone(args: argparse.Namespace) -> int:
    from .standalone import standalone

    return standalone(
        duration=args.duration,
        backend=args.backend,
        cgroupfs=args.cgroupfs,
        kubepods=args.kubepods,
        allow_mount=args.allow_mount,
    )


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="podtrace-agent", description="podtrace node agent")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    standalone = commands.add_parser(
        "standalone",
        help="trace every container under kubepods, no cluster needed (JSON lines)",
        description="Trace every container under kubepods on this node and print JSON "
                    "lines: the environment, exec/exit events, a summary per container "
                    "at the end or on SIGINT/SIGTERM.",
    )
    standalone.add_argument(
        "--duration", type=_seconds, metavar="DURATION",
        help="how long to trace, e.g. 10s or 1m (default: until SIGINT/SIGTERM)",
    )
    _node_flags(standalone)
    standalone.set_defaults(handler=_standalone)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
