"""The apiserver's own record of every write, for tests that must count writes:
an audit policy (`audit_args`) and a reader of the JSON lines it produces.

The audit log sees what no client log can: every write that reached the
apiserver, from any process (a replica killed with SIGKILL included), with the
object as it was stored after the write. Replicas of the operator tell
themselves apart by their User-Agent (`podtrace-operator (<identity>)`).

What counts as a write "done twice":

- a *no-op*: an accepted write whose answer carries the resourceVersion of a
  write before it (the apiserver stores nothing when nothing changes, so two
  accepted writes share a resourceVersion only when the second changed nothing);
- a *stale-view conflict*: a status write conditional on a resourceVersion
  (see the operator's runtime) that the apiserver refused because an operator
  had written the object since: a decision taken from an outdated picture. A
  refusal because a user edited the object meanwhile is a plain race.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

WRITE_VERBS = ("create", "update", "patch", "delete")

POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "RequestResponse",
            "verbs": list(WRITE_VERBS),
            "resources": [
                {"group": "podtrace.io"},
                {"group": "events.k8s.io"},
                {"group": "coordination.k8s.io", "resources": ["leases"]},
            ],
        },
        {"level": "None"},
    ],
}


def audit_args(directory: Path) -> tuple[list[str], Path]:
    """kube-apiserver flags that log every write of podtrace's kinds, Events and Leases
    (request and stored object) to `directory`/audit.log; and that log's path."""
    policy = directory / "audit-policy.json"  # JSON is YAML
    policy.write_text(json.dumps(POLICY))
    log = directory / "audit.log"
    return [f"--audit-policy-file={policy}", f"--audit-log-path={log}",
            "--audit-log-format=json", "--audit-log-mode=blocking"], log  # fmt: skip


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _rv(obj: Any) -> int | None:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")
    except (ValueError, AttributeError):
        return None


@dataclass(frozen=True)
class Write:
    """One write request as the apiserver answered it."""

    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    user_agent: str
    code: int
    received: datetime
    done: datetime
    request: dict[str, Any] | None
    response: dict[str, Any] | None

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300

    @property
    def target(self) -> tuple[str, str, str]:
        """(resource, namespace, name): the object, whatever the subresource."""
        return self.resource, self.namespace, self.name

    @property
    def precondition(self) -> int | None:
        """The resourceVersion the request was conditional on, if any."""
        return _rv(self.request) if self.verb in ("update", "patch") else None

    @property
    def stored_version(self) -> int | None:
        """The resourceVersion of the object the answer carries (accepted writes)."""
        return _rv(self.response) if self.accepted else None

    def by(self, agent_prefix: str) -> bool:
        return self.user_agent.startswith(agent_prefix)


def read_writes(log: Path) -> list[Write]:
    """Every completed write in the audit log, in the order the apiserver finished them."""
    writes = []
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("stage") != "ResponseComplete" or entry.get("verb") not in WRITE_VERBS:
            continue
        ref = entry.get("objectRef") or {}
        writes.append(Write(
            verb=entry["verb"], resource=ref.get("resource", ""),
            subresource=ref.get("subresource", ""), namespace=ref.get("namespace", ""),
            name=ref.get("name", ""), user_agent=entry.get("userAgent", ""),
            code=int((entry.get("responseStatus") or {}).get("code") or 0),
            received=_time(entry["requestReceivedTimestamp"]),
            done=_time(entry["stageTimestamp"]),
            request=entry.get("requestObject"), response=entry.get("responseObject"),
        ))  # fmt: skip
    return writes


def no_ops(writes: Sequence[Write], agent_prefix: str) -> list[Write]:
    """Accepted writes by `agent_prefix` that changed nothing (see the module docstring)."""
    first_at: dict[int, Write] = {}
    found = []
    for w in sorted(writes, key=lambda w: w.done):
        rv = w.stored_version
        if w.verb == "delete" or rv is None:
            continue
        if rv in first_at and w.by(agent_prefix):
            found.append(w)
        first_at.setdefault(rv, w)
    return found


def stale_conflicts(writes: Sequence[Write], agent_prefix: str) -> list[tuple[Write, Write]]:
    """Refused conditional status writes by `agent_prefix`, each with the accepted write
    that made its precondition stale, when that write too was an operator's."""
    found = []
    for w in writes:
        if not (w.by(agent_prefix) and w.subresource == "status" and w.code == 409):
            continue
        if w.precondition is None:
            continue
        later = [o for o in writes if o.accepted and o.target == w.target
                 and (o.stored_version or 0) > w.precondition]  # fmt: skip
        if later:
            cause = min(later, key=lambda o: o.stored_version or 0)
            if cause.by(agent_prefix):
                found.append((w, cause))
    return found
