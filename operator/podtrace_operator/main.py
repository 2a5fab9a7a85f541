"""`podtrace-operator`: run the kopf operator.

    podtrace-operator --kubeconfig ~/.kube/config --verbose
    podtrace-operator --standalone                 # in a pod: in-cluster credentials

Replicas coordinate through kopf peering (the ClusterKopfPeering named by
--peering, shipped in manifests/base): each replica takes a random priority
unless --priority is given, the highest live one works, the others stand by.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
from datetime import timedelta

import kopf

from podtrace_api.base import parse_duration

from . import handlers
from .kube import Kube, load_configuration
from .leadership import PeeringGate, Standalone, random_priority
from .runtime import Runtime, Settings

logger = logging.getLogger(__name__)

DEFAULT_PEERING = "podtrace-operator"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="podtrace-operator",
        description="Compile TracingPolicies and ContainerTraces into one NodeTracer per node.",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file; default: in-cluster "
                        "ServiceAccount, else $KUBECONFIG or ~/.kube/config")  # fmt: skip
    parser.add_argument("--namespace", default=_own_namespace(),
                        help="the namespace the operator runs in (names its peering "
                        "identity); default: $POD_NAMESPACE or the ServiceAccount's")  # fmt: skip
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument("--peering", default=DEFAULT_PEERING, metavar="NAME",
                         help="the ClusterKopfPeering replicas coordinate through "
                         f"(default {DEFAULT_PEERING})")  # fmt: skip
    peering.add_argument("--standalone", "--no-peering", action="store_true",
                         help="no peering: this process is the only writer")  # fmt: skip
    parser.add_argument("--priority", type=int, default=None,
                        help="peering priority (default: random, so replicas differ)")  # fmt: skip
    parser.add_argument("--liveness", metavar="URL",
                        help="serve liveness probes, e.g. http://0.0.0.0:8080/healthz")  # fmt: skip
    parser.add_argument("--pending-timeout", default="5m", type=parse_duration,
                        help="a ContainerTrace that traces nothing this long fails "
                        "(default 5m)")  # fmt: skip
    parser.add_argument("--top-syscalls", type=int, default=20,
                        help="syscalls listed in a ContainerTrace's histogram "
                        "(max 64)")  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--debug", action="store_true", help="log everything (kopf too)")
    return parser.parse_args(argv)


def _own_namespace() -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    with contextlib.suppress(OSError), open(path) as f:
        return f.read().strip()
    return "podtrace-system"


def identity(namespace: str) -> str:
    """This replica's peering identity: namespace/pod (or host), pid."""
    who = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{namespace}/{who}/{os.getpid()}"


def configure_logging(*, verbose: bool, debug: bool) -> None:
    """INFO for podtrace and kopf's own engine; kopf's line per handler call (two per
    pod event) and the probe's access log only with --verbose; everything with --debug."""
    kopf.configure(debug=debug)
    if debug:
        return
    chatty = logging.INFO if verbose else logging.WARNING
    for name in ("kopf.objects", "kopf.activities", "aiohttp.access"):
        logging.getLogger(name).setLevel(chatty)


def operator_settings(args: argparse.Namespace) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # podtrace raises its own events.k8s.io/v1 Events; kopf's core/v1 ones would be noise.
    settings.posting.enabled = False
    # Nothing here uses kopf's progress or diff-base storage (index and event handlers
    # only), and if a changing handler ever appears, it must not write annotations onto
    # user objects: keep both in status.
    settings.persistence.progress_storage = kopf.StatusProgressStorage(
        field="status.kopf.progress"
    )
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(
        field="status.kopf.lastHandledConfiguration"
    )
    settings.persistence.finalizer = "podtrace.io/operator"  # never added: no deletion handlers
    # Events for one object closer than this are folded into one reaction.
    settings.batching.batch_window = 0.02
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    return settings


async def run(args: argparse.Namespace) -> int:
    cfg = load_configuration(args.kubeconfig)
    kube = Kube(cfg)
    me = identity(args.namespace)
    priority = args.priority if args.priority is not None else random_priority()
    gate = Standalone() if args.standalone else PeeringGate(kube, args.peering, me, priority)
    runtime = Runtime(
        Settings(
            pending_timeout=args.pending_timeout,
            top_syscalls=max(1, min(args.top_syscalls, 64)),
            instance=me,
        ),
        kube,
        gate,
    )
    if isinstance(gate, PeeringGate) and await kube.ensure_cluster_peering(args.peering):
        logger.info("created ClusterKopfPeering %s", args.peering)
    tasks = [asyncio.create_task(runtime.run(), name="podtrace writer")]
    if isinstance(gate, PeeringGate):
        tasks.append(asyncio.create_task(gate.run(runtime.activated), name="podtrace peering"))
        logger.info("peering %s as %s with priority %d", args.peering, me, priority)
    try:
        await kopf.operator(
            registry=handlers.registry,
            settings=operator_settings(args),
            memo=kopf.Memo(runtime=runtime, kubeconfig=args.kubeconfig),
            clusterwide=True,
            standalone=bool(args.standalone),
            peering_name=None if args.standalone else args.peering,
            priority=priority,
            identity=me,  # type: ignore[arg-type]
            liveness_endpoint=args.liveness,
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await kube.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point `podtrace-operator`."""
    args = parse_args(argv)
    configure_logging(verbose=args.verbose, debug=args.debug)
    if args.pending_timeout <= timedelta(0):
        print("--pending-timeout must be positive", file=sys.stderr)
        return 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
