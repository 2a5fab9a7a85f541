"""Whether this replica may write: a coordination.k8s.io/v1 Lease decides.

Replicas of the operator all watch; only the holder of the Lease
(`podtrace-system/podtrace-operator` in the shipped manifests) writes. The rules,
those of client-go's leader election:

- The holder renews the Lease every `retry` seconds (an update conditional on the
  resourceVersion it read, so two replicas can never both succeed) and stops
  writing on its own `renew_deadline` seconds after the start of its last
  successful renewal, whether or not it could talk to the apiserver since.
- Another replica takes the Lease only after it saw the same holder record
  (holder, renewTime, duration) unchanged for the holder's `leaseDurationSeconds`,
  measured on its own monotonic clock (no trust in the holder's wall clock), or
  at once when the holder released it on a clean shutdown.
- `renew_deadline < duration`: between the moment an old holder stops writing and
  the earliest moment a new one may start, `duration - renew_deadline` seconds
  are left for a write the old holder had in flight.

Why not kopf peering (what podtrace used before): peering has no atomic handover.
A replica starts working as soon as it sees itself the highest-priority live
peer and the one it displaces stops only when it notices, so for a moment both
write; liveness is judged from the peer's own wall clock stamp; a dead replica is
replaced only after the 60 s peering lifetime. A Lease update either wins or
gets 409 Conflict, so at most one replica holds it at any time.

A replica that becomes the holder re-lists everything before it writes (see
`Runtime.activated`): its watches may lag behind what the previous holder wrote.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp

from .kube import ApiError, Kube

logger = logging.getLogger(__name__)


class Gate(Protocol):
    @property
    def active(self) -> bool: ...


class Standalone:
    """No Lease: this replica is the only writer."""

    active = True


@dataclass(frozen=True)
class LeaseTimes:
    """Seconds; client-go's defaults (kube-controller-manager uses the same)."""

    duration: float = 15.0  # how long others wait after the holder's last renewal
    renew_deadline: float = 10.0  # the holder stops writing this long after its last renewal
    retry: float = 2.0  # how often to try to take or renew

    def check(self) -> None:
        if not 0 < self.retry < self.renew_deadline < self.duration:
            raise ValueError(
                "lease times must satisfy 0 < retry < renew deadline < duration "
                f"(got {self.retry}, {self.renew_deadline}, {self.duration})"
            )


def micro_time(when: datetime) -> str:
    """A MicroTime as the apiserver wants it: RFC 3339 with microseconds, UTC."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def holder_record(spec: Mapping[str, Any]) -> tuple[Any, ...]:
    """What must stay unchanged for a holder to count as gone."""
    return (
        spec.get("holderIdentity") or "",
        spec.get("renewTime"),
        spec.get("leaseDurationSeconds"),
        spec.get("leaseTransitions"),
    )


def claim(
    spec: Mapping[str, Any],
    identity: str,
    *,
    unchanged_for: float,
    default_duration: float,
    wall_now: datetime,
) -> dict[str, Any] | None:
    """The Lease spec to write so that `identity` holds (or keeps) the Lease, or None
    while another holder's record is younger than its lease duration.

    `unchanged_for`: seconds this replica has seen `spec`'s holder record unchanged.

    >>> now = datetime(2026, 1, 1, tzinfo=UTC)
    >>> held = {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 3}
    >>> claim(held, "b", unchanged_for=5, default_duration=15, wall_now=now) is None
    True
    >>> claim(held, "b", unchanged_for=16, default_duration=15, wall_now=now)["leaseTransitions"]
    4
    """
    holder = spec.get("holderIdentity") or ""
    duration = float(spec.get("leaseDurationSeconds") or default_duration)
    if holder and holder != identity and unchanged_for <= duration:
        return None
    stamp = micro_time(wall_now)
    transitions = int(spec.get("leaseTransitions") or 0)
    if holder == identity:
        acquired = spec.get("acquireTime") or stamp
    else:  # a new holder, as client-go counts it (after a release too); 0 for a new Lease
        acquired = stamp
        transitions += 1 if spec else 0
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": max(1, round(default_duration)),
        "acquireTime": acquired,
        "renewTime": stamp,
        "leaseTransitions": transitions,
    }


class LeaseGate:
    """Takes and renews one Lease; `active` while this replica holds it."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        times: LeaseTimes | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.times = times or LeaseTimes()
        self.times.check()
        self.clock = clock
        self._valid_until: float | None = None  # monotonic; None: not the holder
        self._seen: tuple[Any, ...] | None = None  # the other holder's record …
        self._seen_at = 0.0  # … and when this replica first saw it

    @property
    def active(self) -> bool:
        """Holding the Lease, with the last renewal younger than the renew deadline."""
        return self._valid_until is not None and self.clock() < self._valid_until

    async def run(self, on_activated: Callable[[], None]) -> None:
        """Forever: take or renew the Lease; `on_activated` on each standby → holder step."""
        was = False
        while True:
            try:
                await self.step()
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as err:
                logger.warning("lease %s/%s: %s", self.namespace, self.name, err)
            now = self.active
            if now != was:
                logger.info("lease %s/%s: this replica %s", self.namespace, self.name,
                            "holds it and writes" if now else "stands by")  # fmt: skip
                if now:
                    on_activated()
            was = now
            await asyncio.sleep(self.times.retry)

    async def step(self) -> None:
        """One attempt to take or renew the Lease."""
        started = self.clock()
        body = await self.kube.get_lease(self.namespace, self.name)
        if body is None:
            spec = claim(
                {},
                self.identity,
                unchanged_for=0.0,
                default_duration=self.times.duration,
                wall_now=datetime.now(UTC),
            )
            assert spec is not None
            fresh = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": self.name, "namespace": self.namespace},
                     "spec": spec}  # fmt: skip
            await self._write(self.kube.create_lease(fresh), started)
            return
        spec = body.get("spec") or {}
        record = holder_record(spec)
        if record != self._seen:
            self._seen, self._seen_at = record, started
        if (spec.get("holderIdentity") or "") != self.identity:
            self._valid_until = None
        wanted = claim(
            spec,
            self.identity,
            unchanged_for=started - self._seen_at,
            default_duration=self.times.duration,
            wall_now=datetime.now(UTC),
        )
        if wanted is None:
            return
        await self._write(self.kube.replace_lease({**body, "spec": wanted}), started)

    async def _write(self, call: Any, started: float) -> None:
        try:
            await call
        except ApiError as err:
            if err.status != 409:  # 409: another replica wrote first; read again next time
                raise
            self._valid_until = None
            return
        self._valid_until = started + self.times.renew_deadline

    async def release(self) -> None:
        """Give the Lease up on a clean shutdown, so that a standby takes it at once.
        Call only after this replica's writer has stopped."""
        if self._valid_until is None:
            return
        self._valid_until = None
        body = await self.kube.get_lease(self.namespace, self.name)
        if body is None or (body.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        stamp = micro_time(datetime.now(UTC))
        spec = {**body["spec"], "holderIdentity": None, "leaseDurationSeconds": 1,
                "renewTime": stamp}  # fmt: skip
        await self.kube.replace_lease({**body, "spec": {k: v for k, v in spec.items()
                                                        if v is not None}})  # fmt: skip
        logger.info("lease %s/%s: released", self.namespace, self.name)
