"""kopf handlers: adapters from watch events to the Runtime, nothing else.

Only index and event handlers are used. kopf stores nothing for them — no
finalizers, no `kopf.zalando.org/*` annotations, no progress in status — so
the objects users apply (and Argo CD or Flux compare) are never touched:
podtrace writes only the status subresource of policies and traces.

Index handlers run for every listed or changed object *before* kopf lets any
other handler run, and kopf runs no other handler until every watched kind is
listed. So upserts go through index handlers, and the first event handler call
means "everything is listed": the writer starts from a complete picture and
never writes a half-built spec (an agent would stop tracing for a moment).
Deletions arrive as DELETED events.
"""

from __future__ import annotations

from typing import Any

import kopf

from podtrace_api import GROUP, VERSION

from .kube import load_configuration
from .runtime import Runtime
from .spo import CRD_NAME

registry = kopf.OperatorRegistry()


def _runtime(memo: Any) -> Runtime:
    return memo.runtime  # type: ignore[no-any-return]


@kopf.on.login(registry=registry)
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """The same credentials as the operator's own client (kubeconfig or in-cluster)."""
    cfg = load_configuration(memo.kubeconfig)
    token = cfg.get_api_key_with_prefix("BearerToken")
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        scheme="Bearer" if token else None,
        token=token.split(" ", 1)[-1] if token else None,
    )


@kopf.on.probe(id="podtrace", registry=registry)
def probe(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    """Liveness detail: listed yet, writing or standing by, writes so far."""
    runtime = _runtime(memo)
    return {"synced": runtime.synced, "active": runtime.gate.active, "writes": runtime.writes}


def _on_event(kind: str, type_: str | None, body: kopf.Body, memo: Any) -> None:
    runtime = _runtime(memo)
    runtime.mark_synced()
    if type_ == "DELETED":
        getattr(runtime, f"{kind}_gone")(body)


# -- Pods, Namespaces, Nodes ------------------------------------------------------------------


@kopf.index("", "v1", "pods", registry=registry)
async def pod_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A pod was listed or changed."""
    _runtime(memo).pod_seen(body)


@kopf.on.event("", "v1", "pods", registry=registry)
async def pod_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A pod was deleted (other event types are handled by the index)."""
    _on_event("pod", type, body, memo)


@kopf.index("", "v1", "namespaces", registry=registry)
async def namespace_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A namespace was listed or relabelled."""
    _runtime(memo).namespace_seen(body)


@kopf.on.event("", "v1", "namespaces", registry=registry)
async def namespace_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A namespace was deleted."""
    _on_event("namespace", type, body, memo)


@kopf.index("", "v1", "nodes", registry=registry)
async def node_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A node was listed or relabelled."""
    _runtime(memo).node_seen(body)


@kopf.on.event("", "v1", "nodes", registry=registry)
async def node_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A node was deleted: its NodeTracer goes too."""
    _on_event("node", type, body, memo)


# -- podtrace kinds ---------------------------------------------------------------------------


@kopf.index(GROUP, VERSION, "tracingpolicies", registry=registry)
async def policy_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A TracingPolicy was listed or changed."""
    _runtime(memo).policy_seen(body)


@kopf.on.event(GROUP, VERSION, "tracingpolicies", registry=registry)
async def policy_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A TracingPolicy was deleted: its targets go."""
    _on_event("policy", type, body, memo)


@kopf.index(GROUP, VERSION, "containertraces", registry=registry)
async def trace_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A ContainerTrace was listed or changed."""
    _runtime(memo).trace_seen(body)


@kopf.on.event(GROUP, VERSION, "containertraces", registry=registry)
async def trace_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A ContainerTrace was deleted: its targets go."""
    _on_event("trace", type, body, memo)


@kopf.index(GROUP, VERSION, "nodetracers", registry=registry)
async def nodetracer_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A NodeTracer was listed, or its agent reported (status)."""
    _runtime(memo).nodetracer_seen(body)


@kopf.on.event(GROUP, VERSION, "nodetracers", registry=registry)
async def nodetracer_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A NodeTracer was deleted: recreated while its node exists."""
    _on_event("nodetracer", type, body, memo)


# -- the Security Profiles Operator's SeccompProfile CRD (spo.py) -----------------------------


def _is_spo_crd(name: str | None, **_: Any) -> bool:
    return name == CRD_NAME


@kopf.index("apiextensions.k8s.io", "v1", "customresourcedefinitions", when=_is_spo_crd,
            registry=registry)  # fmt: skip
async def spo_crd_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """SPO's SeccompProfile CRD was listed, installed or changed."""
    _runtime(memo).spo_crd_seen(body)


@kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions", when=_is_spo_crd,
               registry=registry)  # fmt: skip
async def spo_crd_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """SPO's SeccompProfile CRD was removed."""
    _on_event("spo_crd", type, body, memo)
