"""`podtrace-operator`: run the kopf operator.

    podtrace-operator --kubeconfig ~/.kube/config --verbose
    podtrace-operator --standalone                 # in a pod: in-cluster credentials

Replicas elect one writer with a coordination.k8s.io/v1 Lease (--lease, in
--namespace; see leadership.py): every replica watches, the Lease's holder
writes, the others stand by and take over when it stops renewing.
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
from podtrace_api.seccompinstall import INSTALL_NAMESPACE

from . import handlers
from .kube import FIELD_MANAGER, Kube, load_configuration
from .leadership import LeaseGate, LeaseTimes, Standalone
from .runtime import Runtime, Settings

logger = logging.getLogger(__name__)

DEFAULT_LEASE = "podtrace-operator"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="podtrace-operator",
        description="Compile TracingPolicies and ContainerTraces into one NodeTracer per node.",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file; default: in-cluster "
                        "ServiceAccount, else $KUBECONFIG or ~/.kube/config")  # fmt: skip
    parser.add_argument("--namespace", default=_own_namespace(),
                        help="the namespace the operator runs in (holds its Lease and the seccomp "
                        "profiles it publishes for the nodes to install); "
                        "default: $POD_NAMESPACE or the ServiceAccount's")  # fmt: skip
    election = parser.add_mutually_exclusive_group()
    election.add_argument("--lease", default=DEFAULT_LEASE, metavar="NAME",
                          help="the Lease replicas elect their writer with "
                          f"(default {DEFAULT_LEASE})")  # fmt: skip
    election.add_argument("--standalone", action="store_true",
                          help="no Lease: this process is the only writer")  # fmt: skip
    times = LeaseTimes()
    parser.add_argument("--lease-duration", type=parse_duration,
                        default=timedelta(seconds=times.duration),
                        help="how long a standby waits after the holder's last renewal "
                        f"(default {times.duration:.0f}s)")  # fmt: skip
    parser.add_argument("--renew-deadline", type=parse_duration,
                        default=timedelta(seconds=times.renew_deadline),
                        help="the holder stops writing this long after its last renewal "
                        f"(default {times.renew_deadline:.0f}s)")  # fmt: skip
    parser.add_argument("--retry-period", type=parse_duration,
                        default=timedelta(seconds=times.retry),
                        help="how often to take or renew the Lease "
                        f"(default {times.retry:.0f}s)")  # fmt: skip
    parser.add_argument("--liveness", metavar="URL",
                        help="serve liveness probes, e.g. http://0.0.0.0:8080/healthz")  # fmt: skip
    parser.add_argument("--pending-timeout", default="5m", type=parse_duration,
                        help="a ContainerTrace that traces nothing this long fails "
                        "(default 5m)")  # fmt: skip
    parser.add_argument("--heartbeat-timeout", default="2m", type=parse_duration,
                        help="a NodeTracer whose agent sent no heartbeat this long gets Ready "
                        "Unknown and is named in the Reporting condition of the policies and "
                        "traces with targets there; keep it above the agents' "
                        "--heartbeat-interval (default 30s) with room for a slow write "
                        "(default 2m)")  # fmt: skip
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
    return INSTALL_NAMESPACE


def identity(namespace: str) -> str:
    """This replica's identity (Lease holder, Events' reportingInstance, User-Agent):
    namespace/pod (or host)/pid."""
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


def lease_times(args: argparse.Namespace) -> LeaseTimes:
    times = LeaseTimes(
        duration=args.lease_duration.total_seconds(),
        renew_deadline=args.renew_deadline.total_seconds(),
        retry=args.retry_period.total_seconds(),
    )
    times.check()
    return times


async def run(args: argparse.Namespace) -> int:
    cfg = load_configuration(args.kubeconfig)
    me = identity(args.namespace)
    kube = Kube(cfg, user_agent=f"{FIELD_MANAGER} ({me})")
    gate: LeaseGate | Standalone = Standalone()
    if not args.standalone:
        gate = LeaseGate(kube, args.namespace, args.lease, me, lease_times(args))
    runtime = Runtime(
        Settings(
            pending_timeout=args.pending_timeout,
            heartbeat_timeout=args.heartbeat_timeout,
            top_syscalls=max(1, min(args.top_syscalls, 64)),
            instance=me,
            namespace=args.namespace,
        ),
        kube,
        gate,
    )
    writer = asyncio.create_task(runtime.run(), name="podtrace writer")
    election = None
    if isinstance(gate, LeaseGate):
        election = asyncio.create_task(gate.run(runtime.activated), name="podtrace lease")
        logger.info("electing the writer with Lease %s/%s as %s", args.namespace, args.lease, me)
    try:
        await kopf.operator(
            registry=handlers.registry,
            settings=operator_settings(args),
            memo=kopf.Memo(runtime=runtime, kubeconfig=args.kubeconfig),
            clusterwide=True,
            standalone=True,  # every replica watches; the Lease decides who writes
            identity=me,  # type: ignore[arg-type]  # else kopf asks getpass (no passwd entry)
            liveness_endpoint=args.liveness,
        )
    finally:
        # The writer stops before the Lease is given up: no write after the release.
        for task in (writer, election):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if isinstance(gate, LeaseGate):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(gate.release(), 5)
        await kube.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point `podtrace-operator`."""
    args = parse_args(argv)
    configure_logging(verbose=args.verbose, debug=args.debug)
    if args.pending_timeout <= timedelta(0):
        print("--pending-timeout must be positive", file=sys.stderr)
        return 2
    if args.heartbeat_timeout <= timedelta(0):
        print("--heartbeat-timeout must be positive", file=sys.stderr)
        return 2
    try:
        lease_times(args)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
