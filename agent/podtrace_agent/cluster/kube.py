"""The agent's edge to the Kubernetes API: watch its own NodeTracer, the Pods
of its node (field selectors, so it never sees the rest of the cluster) and the
seccomp profiles to install (labelled ConfigMaps of podtrace's namespace), patch
its NodeTracer status, and write Events on Pods.

Watches run in daemon threads and hand plain dicts to callbacks; they restart
with backoff when the connection drops, so an apiserver outage only delays.
Every call has a client-side timeout (`timeout`, seconds to connect and to
wait for a reply): a list, patch or create that hangs raises instead of
holding the caller; a watch's read timeout is a little longer than the
server-side `timeoutSeconds`, so a connection that died silently is noticed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from podtrace_api import GROUP, VERSION
from podtrace_api.seccompinstall import INSTALL_LABEL

log = logging.getLogger(__name__)
REPORTING_CONTROLLER = "podtrace.io/agent"
REQUEST_TIMEOUT_S = 10.0
WATCH_S = 300  # the server ends a watch after this long; the agent relists
WATCH_READ_TIMEOUT_S = WATCH_S + 30.0
RELIST_MAX_BACKOFF_S = 10.0  # after an outage, the watches are back within this long


def load_config(kubeconfig: str | None) -> client.ApiClient:
    """An API client from `kubeconfig`, or the in-cluster service account."""
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    config.load_incluster_config()
    return client.ApiClient()


def event_name(pod: str, key: tuple[str, str, str]) -> str:
    """A stable Event name per series, so an agent restart updates, not duplicates.

    >>> event_name("web-1", ("uid", "TracingPolicy/p", "shell"))[:22]
    'web-1.podtrace.a53a39f'
    """
    digest = hashlib.sha256("/".join(key).encode()).hexdigest()[:12]
    return f"{pod[:200]}.podtrace.{digest}"


class Kube:
    """Typed calls the agent makes, over one ApiClient."""

    def __init__(self, api: client.ApiClient, node: str, timeout: float = REQUEST_TIMEOUT_S
                 ) -> None:
        self.api = api
        self.api.user_agent = f"podtrace-agent ({node})"  # names it in the audit log
        self.node = node
        self.timeout = timeout
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.events = client.EventsV1Api(api)
        self.stop = threading.Event()

    def uninstalling(self, namespace: str | None) -> bool:
        """Whether podtrace is being uninstalled: the agent's namespace is gone or
        terminating, its NodeTracer (or the NodeTracer kind) is gone, or its own
        access is (`kubectl delete -k` may take the ClusterRoleBinding or the
        ServiceAccount first: 403, 401). False when the apiserver cannot tell (then
        the agent's pins are kept, README: Reliability)."""
        try:
            if namespace:
                ns = self.core.read_namespace(namespace, _request_timeout=self.timeout)
                if ns.metadata.deletion_timestamp is not None:
                    return True
            self.custom.get_cluster_custom_object(GROUP, VERSION, "nodetracers", self.node,
                                                  _request_timeout=self.timeout)
        except ApiException as err:
            return err.status in (401, 403, 404)
        except Exception as err:  # unreachable, or a reply not understood: cannot tell
            log.warning("cannot tell whether podtrace is being uninstalled: %s", err)
        return False

    # -- reads -------------------------------------------------------------------
    def _watch_forever(
        self,
        what: str,
        lister: Callable[..., Any],
        on_event: Callable[[str, dict[str, Any]], None],
        on_sync: Callable[[list[dict[str, Any]]], None],
        on_error: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> None:
        backoff = 1.0
        while not self.stop.is_set():
            try:
                listing = lister(_request_timeout=self.timeout, **kwargs)
                items = listing["items"] if isinstance(listing, dict) else [
                    self.api.sanitize_for_serialization(i) for i in listing.items
                ]
                version = (listing["metadata"] if isinstance(listing, dict)
                           else self.api.sanitize_for_serialization(listing.metadata))
                on_sync(items)
                backoff = 1.0
                stream = watch.Watch()
                for event in stream.stream(
                        lister, resource_version=version.get("resourceVersion"),
                        timeout_seconds=WATCH_S,
                        _request_timeout=(self.timeout, WATCH_READ_TIMEOUT_S), **kwargs):
                    if self.stop.is_set():
                        stream.stop()
                        return
                    obj = event["object"]
                    if not isinstance(obj, dict):
                        obj = self.api.sanitize_for_serialization(obj)
                    on_event(event["type"], obj)
            except Exception as err:  # connection lost, 410 Gone, …: relist after a pause
                log.warning("watch of %s interrupted (%s); relisting in %.0fs", what, err, backoff)
                if on_error is not None:
                    status = getattr(err, "status", None)
                    on_error(f"cannot watch {what}: {status or ''} {getattr(err, 'reason', err)}")
                self.stop.wait(backoff)
                backoff = min(RELIST_MAX_BACKOFF_S, backoff * 2)

    def watch_node_tracer(
        self,
        on_event: Callable[[str, dict[str, Any]], None],
        on_sync: Callable[[list[dict[str, Any]]], None],
    ) -> threading.Thread:
        """Watch only this node's NodeTracer."""
        return self._start(
            "nodetracer", self.custom.list_cluster_custom_object, on_event, on_sync,
            group=GROUP, version=VERSION, plural="nodetracers",
            field_selector=f"metadata.name={self.node}",
        )

    def watch_pods(
        self,
        on_event: Callable[[str, dict[str, Any]], None],
        on_sync: Callable[[list[dict[str, Any]]], None],
    ) -> threading.Thread:
        """Watch only the Pods scheduled to this node."""
        return self._start(
            "pods", self.core.list_pod_for_all_namespaces, on_event, on_sync,
            field_selector=f"spec.nodeName={self.node}",
        )

    def watch_install_config_maps(
        self,
        namespace: str,
        on_event: Callable[[str, dict[str, Any]], None],
        on_sync: Callable[[list[dict[str, Any]]], None],
        on_error: Callable[[str], None],
    ) -> threading.Thread:
        """Watch the seccomp profiles to install (ConfigMaps of podtrace's namespace
        labelled by the operator; seccompdir.py); `on_error` hears why not, while not."""
        return self._start(
            f"the ConfigMaps of {namespace}", self.core.list_namespaced_config_map, on_event,
            on_sync, on_error, namespace=namespace, label_selector=INSTALL_LABEL,
        )

    def _start(self, what: str, lister: Callable[..., Any], *args: Any, **kwargs: Any
               ) -> threading.Thread:
        thread = threading.Thread(
            target=self._watch_forever, args=(what, lister, *args), kwargs=kwargs,
            name=f"watch-{what}", daemon=True,
        )
        thread.start()
        return thread

    # -- writes ------------------------------------------------------------------
    def patch_status(self, status: dict[str, Any]) -> None:
        """Merge-patch this node's NodeTracer status (the agent owns only that)."""
        self.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, "nodetracers", self.node, {"status": status},
            _request_timeout=self.timeout,
        )

    def write_event(
        self,
        *,
        pod: dict[str, str],
        key: tuple[str, str, str],
        reason: str,
        type_: str,
        note: str,
        action: str,
        count: int,
        first_seen: datetime,
        related: dict[str, str] | None,
    ) -> None:
        """Create the Event of a series, or update its series count (a note, like every
        field but the series, is fixed when the Event is created)."""
        name = event_name(pod["name"], key)
        now = datetime.now(UTC)
        body: dict[str, Any] = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": pod["namespace"]},
            "eventTime": first_seen.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": f"podtrace-agent-{self.node}"[:128],
            "action": action[:128],
            "reason": reason[:128],
            "type": type_,
            "note": note[:1024],
            "regarding": {"apiVersion": "v1", "kind": "Pod", "namespace": pod["namespace"],
                          "name": pod["name"], "uid": pod["uid"]},
        }
        if related:
            body["related"] = related
        if count > 1:
            body["series"] = {"count": count,
                              "lastObservedTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        try:
            self.events.create_namespaced_event(pod["namespace"], body,
                                                _request_timeout=self.timeout)
        except ApiException as err:
            if err.status != 409:
                raise
            if "series" not in body:
                return  # the Event is there (an earlier write whose reply was lost)
            # Only the series may change: events.k8s.io/v1 refuses any other field's update
            # ("field is immutable"), the note included.
            self.events.patch_namespaced_event(name, pod["namespace"], {"series": body["series"]},
                                               _request_timeout=self.timeout)
