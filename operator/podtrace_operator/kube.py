"""The operator's own calls to the apiserver (kopf does the watching): a small
asyncio REST client over aiohttp, raw JSON in and out.

Credentials come from the official client's loaders (kubeconfig with client
certificates, tokens or exec plugins; or the in-cluster ServiceAccount, whose
token file is re-read as it rotates). Every call the operator makes is a method
here, so the ClusterRole in manifests/base can be checked against this file.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from kubernetes import config as kube_config
from kubernetes.client import Configuration

from podtrace_api import GROUP, VERSION

from .spo import SpoApi

logger = logging.getLogger(__name__)

FIELD_MANAGER = "podtrace-operator"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"  # JSON is YAML
CR = f"/apis/{GROUP}/{VERSION}"


class ApiError(Exception):
    """A non-2xx answer from the apiserver."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        self.status = status
        self.body = body
        try:
            message = json.loads(body).get("message", body)
        except (ValueError, AttributeError):
            message = body
        super().__init__(f"{method} {path}: HTTP {status}: {message}")

    @property
    def transient(self) -> bool:
        """Whether a retry may succeed: throttled (429) or a server error."""
        return self.status == 429 or self.status >= 500


def load_configuration(kubeconfig: str | None) -> Configuration:
    """A kubeconfig file when given, else in-cluster credentials, else ~/.kube/config."""
    cfg = Configuration()
    if kubeconfig:
        kube_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        kube_config.load_incluster_config(client_configuration=cfg)
    else:
        kube_config.load_kube_config(client_configuration=cfg)
    return cfg


class Kube:
    """Async JSON calls against one apiserver."""

    def __init__(
        self, cfg: Configuration, *, timeout: float = 30.0, user_agent: str = FIELD_MANAGER
    ) -> None:
        self._cfg = cfg
        self._user_agent = user_agent  # names the replica in the apiserver's audit log
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self._cfg.verify_ssl:
            return False
        ctx = ssl.create_default_context(cafile=self._cfg.ssl_ca_cert)
        if self._cfg.cert_file:
            ctx.load_cert_chain(self._cfg.cert_file, self._cfg.key_file)
        return ctx

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=16)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """One call; the decoded JSON answer, or ApiError."""
        url = self._cfg.host.rstrip("/") + path + (f"?{urlencode(params)}" if params else "")
        headers = {"Accept": "application/json", "User-Agent": self._user_agent}
        token = self._cfg.get_api_key_with_prefix("BearerToken")  # refreshes rotated tokens
        if token:
            headers["Authorization"] = token if " " in token else f"Bearer {token}"
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        session = await self._http()
        async with session.request(method, url, data=data, headers=headers) as resp:
            text = await resp.text()
            if resp.status >= 300:
                raise ApiError(method, path, resp.status, text)
            return json.loads(text) if text else None

    async def list_snapshot(self, path: str, page: int = 500) -> tuple[list[dict[str, Any]], str]:
        """Every item of a collection and the resourceVersion of that snapshot (the pages
        of one list are one consistent snapshot)."""
        params = {"limit": str(page)}
        items: list[dict[str, Any]] = []
        while True:
            answer = await self.request("GET", path, params=params)
            items += answer.get("items") or []
            meta = answer.get("metadata") or {}
            if not meta.get("continue"):
                return items, str(meta.get("resourceVersion") or "")
            params = {"limit": str(page), "continue": meta["continue"]}

    # -- NodeTracers: spec is ours ---------------------------------------------------------

    async def create_nodetracer(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request(
            "POST", f"{CR}/nodetracers", body, params={"fieldManager": FIELD_MANAGER}
        )

    async def patch_nodetracer(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self.request(
            "PATCH", f"{CR}/nodetracers/{quote(name)}", patch,
            content_type=MERGE_PATCH, params={"fieldManager": FIELD_MANAGER},
        )  # fmt: skip

    async def patch_nodetracer_status(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Only to set Ready Unknown when the node's agent stopped reporting (its agent
        owns the rest of the status; heartbeats.py)."""
        return await self.request(
            "PATCH", f"{CR}/nodetracers/{quote(name)}/status", patch,
            content_type=MERGE_PATCH, params={"fieldManager": FIELD_MANAGER},
        )  # fmt: skip

    async def delete_nodetracer(self, name: str) -> None:
        try:
            await self.request("DELETE", f"{CR}/nodetracers/{quote(name)}")
        except ApiError as err:
            if err.status != 404:
                raise

    # -- status of user objects (never their spec or metadata) ------------------------------

    async def patch_policy_status(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self.request(
            "PATCH", f"{CR}/tracingpolicies/{quote(name)}/status", patch,
            content_type=MERGE_PATCH, params={"fieldManager": FIELD_MANAGER},
        )  # fmt: skip

    async def patch_trace_status(
        self, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        return await self.request(
            "PATCH", f"{CR}/namespaces/{quote(namespace)}/containertraces/{quote(name)}/status",
            patch, content_type=MERGE_PATCH, params={"fieldManager": FIELD_MANAGER},
        )  # fmt: skip

    # -- seccomp profiles: ConfigMaps the operator owns --------------------------------------

    async def apply_configmap(self, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        path = f"/api/v1/namespaces/{quote(meta['namespace'])}/configmaps/{quote(meta['name'])}"
        return await self.request(
            "PATCH", path, body, content_type=APPLY_PATCH,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
        )  # fmt: skip

    async def list_configmaps(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        answer = await self.request("GET", f"/api/v1/namespaces/{quote(namespace)}/configmaps",
                                    params={"labelSelector": selector})  # fmt: skip
        return list(answer.get("items") or [])

    async def delete_configmap(self, namespace: str, name: str) -> None:
        try:
            await self.request(
                "DELETE", f"/api/v1/namespaces/{quote(namespace)}/configmaps/{quote(name)}")
        except ApiError as err:
            if err.status != 404:
                raise

    # -- SPO SeccompProfiles the operator owns (where SPO's CRD is installed; spo.py) ------

    async def apply_seccompprofile(self, api: SpoApi, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        return await self.request(
            "PATCH", api.path(meta.get("namespace", ""), quote(meta["name"])), body,
            content_type=APPLY_PATCH, params={"fieldManager": FIELD_MANAGER, "force": "true"},
        )  # fmt: skip

    async def list_seccompprofiles(self, api: SpoApi, selector: str) -> list[dict[str, Any]]:
        """Ours (by label), in every namespace when namespaced."""
        answer = await self.request("GET", api.path(), params={"labelSelector": selector})
        return list(answer.get("items") or [])

    async def delete_seccompprofile(self, api: SpoApi, namespace: str, name: str) -> None:
        try:
            await self.request("DELETE", api.path(namespace, quote(name)))
        except ApiError as err:
            if err.status != 404:
                raise

    # -- Events (events.k8s.io/v1) ----------------------------------------------------------

    async def create_event(self, body: dict[str, Any]) -> dict[str, Any]:
        namespace = body["metadata"]["namespace"]
        return await self.request(
            "POST", f"/apis/events.k8s.io/v1/namespaces/{quote(namespace)}/events", body
        )

    async def get_event(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.request(
                "GET", f"/apis/events.k8s.io/v1/namespaces/{quote(namespace)}/events/{quote(name)}"
            )
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def patch_event(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        await self.request(
            "PATCH", f"/apis/events.k8s.io/v1/namespaces/{quote(namespace)}/events/{quote(name)}",
            patch, content_type=MERGE_PATCH,
        )  # fmt: skip

    # -- leader election: one Lease in the operator's namespace ---------------------------

    def _lease_path(self, namespace: str, name: str = "") -> str:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{quote(namespace)}/leases"
        return f"{path}/{quote(name)}" if name else path

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", self._lease_path(namespace, name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def create_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", self._lease_path(body["metadata"]["namespace"]), body)

    async def replace_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        """PUT with the resourceVersion read: 409 Conflict when another replica wrote since."""
        meta = body["metadata"]
        return await self.request("PUT", self._lease_path(meta["namespace"], meta["name"]), body)
