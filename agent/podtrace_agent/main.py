"""`podtrace-agent`: the node agent.

    podtrace-agent standalone [--duration 10s] [--backend auto|bcc|ftrace] [--cgroupfs PATH]
                              [--kubepods PATH] [--no-mount]
                              [--runtime-endpoint URL]... [--host-root PATH]
        trace every container under kubepods on this node, no cluster needed;
        JSON lines on stdout (see podtrace_agent.standalone)

    podtrace-agent run --node-name NODE [--kubeconfig FILE] [--runtime-endpoint EP] ...
        the node agent in a cluster (see podtrace_agent.cluster.agent)

    podtrace-agent unpin --instance NAME | --all
        remove the BPF pins (bpf/pins.py) an agent left behind
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from podtrace_api.base import parse_duration
from podtrace_api.seccompinstall import INSTALL_NAMESPACE

from .cluster.writer import HEARTBEAT_S

if TYPE_CHECKING:
    from .core import EnricherLike

BACKENDS = ("auto", "bcc", "ftrace")


def _seconds(text: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _power_of_two(text: str) -> int:
    value = _positive(text)
    if value & (value - 1):
        raise argparse.ArgumentTypeError(f"{text} is not a power of two")
    return value


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
    parser.add_argument(
        "--runtime-endpoint", metavar="URL", action="append", default=[],
        help="CRI socket for pod and container names, e.g. unix:///run/containerd/containerd.sock "
             "(repeatable, tried first; then the known sockets are tried)",
    )
    parser.add_argument(
        "--instance", metavar="NAME",
        help="bcc: pin the BPF maps and program links under /sys/fs/bpf/podtrace/NAME, so "
             "that a restarted agent (kill -9 included) goes on where this one stopped "
             "(default: the node's name; standalone: 'standalone')",
    )
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false",
        help="bcc: pin nothing; what was counted goes with the agent",
    )
    parser.add_argument(
        "--host-root", metavar="PATH",
        help="where the host's / is mounted when the agent runs in a container, e.g. /host: "
             "the known runtime sockets are also tried under it",
    )


def _enricher(args: argparse.Namespace) -> EnricherLike:
    """CRI enrichment over the runtime discovery finds; without one, lines say why."""
    from .cri.enrich import Enricher
    from .cri.runtime import discover_runtime

    report = discover_runtime(args.runtime_endpoint, args.host_root)
    print(f"podtrace-agent: runtime: {report.message}", file=sys.stderr)
    return Enricher.from_report(report)


def _standalone(args: argparse.Namespace) -> int:
    from .standalone import standalone

    return standalone(
        duration=args.duration,
        backend=args.backend,
        cgroupfs=args.cgroupfs,
        kubepods=args.kubepods,
        allow_mount=args.allow_mount,
        enricher=_enricher(args),
        pin_instance=(args.instance or "standalone") if args.pin else None,
    )


def _run(args: argparse.Namespace) -> int:
    from .cluster.agent import AgentOptions, run_agent

    return run_agent(AgentOptions(
        node=args.node_name,
        kubeconfig=args.kubeconfig,
        backend=args.backend,
        cgroupfs=args.cgroupfs,
        kubepods=args.kubepods,
        allow_mount=args.allow_mount,
        runtime_endpoints=tuple(args.runtime_endpoint),
        host_root=args.host_root,
        metrics_port=args.metrics_port,
        status_interval=args.status_interval,
        heartbeat_interval=args.heartbeat_interval,
        json_events=not args.no_json_events,
        max_traced=args.max_traced,
        ringbuf_pages=args.ringbuf_pages,
        stall_timeout=args.stall_timeout,
        pin_instance=(args.instance or args.node_name) if args.pin else None,
        namespace=args.namespace,
        seccomp_dir=args.seccomp_dir,
        install_namespace=args.namespace or INSTALL_NAMESPACE,
    ))


def _unpin(args: argparse.Namespace) -> int:
    from .bpf.pins import PIN_ROOT, instance_name, remove_tree

    target = PIN_ROOT if args.all else PIN_ROOT / instance_name(args.instance)
    remove_tree(target)
    print(f"podtrace-agent: removed {target}", file=sys.stderr)
    return 0


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

    run = commands.add_parser(
        "run",
        help="the node agent in a cluster: apply this node's NodeTracer, report status",
        description="Watch this node's NodeTracer and Pods, trace the targets, and report "
                    "NodeTracer status, Events on Pods for rule matches, JSON lines on "
                    "stdout and Prometheus metrics.",
    )
    run.add_argument("--node-name", required=True, help="this node's name ($NODE_NAME)")
    run.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster config)")
    run.add_argument("--metrics-port", type=int, default=9465,
                     help="serve Prometheus /metrics and /healthz on this port (0: off)")
    run.add_argument("--stall-timeout", type=_seconds, default=30.0, metavar="DURATION",
                     help="/healthz fails when the agent's loop has not turned for this long "
                          "(default 30s; the DaemonSet's livenessProbe)")
    run.add_argument("--status-interval", type=_seconds, default=5.0,
                     help="at most one NodeTracer status write per interval (default 5s)")
    run.add_argument("--heartbeat-interval", type=_seconds, default=HEARTBEAT_S,
                     metavar="DURATION",
                     help="rewrite the NodeTracer status (lastHeartbeatTime) at least this "
                          "often even when nothing changed (default 30s; never more often "
                          "than --status-interval); the operator sets Ready Unknown after its "
                          "--heartbeat-timeout (default 2m) without one")
    run.add_argument("--no-json-events", action="store_true",
                     help="do not print events as JSON lines on stdout")
    run.add_argument("--max-traced", type=_positive, default=512, metavar="N",
                     help="containers traced at once: BPF traced-map entries and counter rows "
                          "(4 KiB each) or ftrace instances (default 512); beyond it "
                          "targets are Pending with reason CapacityExceeded")
    run.add_argument("--ringbuf-pages", type=_power_of_two, default=256, metavar="N",
                     help="bcc ring buffer size in 4 KiB pages, a power of two (default 256 = "
                          "1 MiB); events beyond it are counted in eventsDropped")
    _node_flags(run)
    run.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE"),
                     help="the agent's namespace ($POD_NAMESPACE): when it is terminating at "
                          "SIGTERM, podtrace is being uninstalled and the BPF pins go; the "
                          "seccomp profiles to install are published there (default "
                          f"{INSTALL_NAMESPACE})")
    run.add_argument("--seccomp-dir", metavar="DIR",
                     help="the kubelet's seccomp directory (<kubelet root-dir>/seccomp, "
                          "/var/lib/kubelet/seccomp by default) as the agent sees it: "
                          "profiles of ContainerTraces with seccompProfile.install go to "
                          "DIR/podtrace/ (default: install none)")
    run.set_defaults(handler=_run)

    unpin = commands.add_parser(
        "unpin",
        help="remove the BPF pins an agent left (its programs detach, its counts go)",
        description="Remove /sys/fs/bpf/podtrace/NAME (or all of it): what a node agent "
                    "killed and never restarted, or uninstalled while it was down, left "
                    "attached and counting.",
    )
    which = unpin.add_mutually_exclusive_group(required=True)
    which.add_argument("--instance", metavar="NAME", help="one instance (a node's name)")
    which.add_argument("--all", action="store_true", help="every instance")
    unpin.set_defaults(handler=_unpin)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
