"""Whether this replica may write: kopf peering decides, this module reads it.

kopf peering pauses an operator's watches while another live operator with a
higher (or the same) priority shares its peering object. Pausing the watches
does not stop the operator's own writer, so the writer asks this gate first.
The gate applies kopf's rule to the peering object's status (identity →
priority, lifetime, lastseen), read on an interval, and tells the runtime when
it becomes active again, so that it can re-list what it missed while paused.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import aiohttp

from .kube import ApiError, Kube

logger = logging.getLogger(__name__)


class Gate(Protocol):
    @property
    def active(self) -> bool: ...


class Standalone:
    """No peering: this replica is the only writer."""

    active = True


def random_priority() -> int:
    """A priority for one replica. kopf pauses every operator that sees a live peer of
    the same priority, so two replicas must differ; the higher one works."""
    return random.randint(1, 2**31 - 1)


def peer_is_alive(info: Mapping[str, Any], now: datetime) -> bool:
    lastseen = info.get("lastseen")
    if not lastseen:
        return True  # kopf treats a peer without lastseen as just seen
    seen = datetime.fromisoformat(str(lastseen).replace("Z", "+00:00"))
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=UTC)
    return seen + timedelta(seconds=int(info.get("lifetime", 60))) > now


def may_write(status: Mapping[str, Any], identity: str, priority: int, now: datetime) -> bool:
    """kopf's rule, read from the peering status: this operator has announced itself
    and no other live operator has a higher or equal priority.

    >>> now = datetime(2026, 1, 1, tzinfo=UTC)
    >>> seen = {"lastseen": "2026-01-01T00:00:00+00:00", "lifetime": 60}
    >>> may_write({"me": {"priority": 5, **seen}, "other": {"priority": 3, **seen}}, "me", 5, now)
    True
    >>> may_write({"me": {"priority": 5, **seen}, "other": {"priority": 9, **seen}}, "me", 5, now)
    False
    """
    if identity not in status:
        return False
    for peer, info in status.items():
        if peer == identity or not isinstance(info, Mapping):
            continue
        if peer_is_alive(info, now) and int(info.get("priority", 0)) >= priority:
            return False
    return True


class PeeringGate:
    """Polls the ClusterKopfPeering object and keeps `active` current."""

    def __init__(
        self, kube: Kube, name: str, identity: str, priority: int, interval: float = 1.0
    ) -> None:
        self.kube = kube
        self.name = name
        self.identity = identity
        self.priority = priority
        self.interval = interval
        self.active = False

    async def run(self, on_activated: Callable[[], None]) -> None:
        """Forever: read the peering object, update `active`, call `on_activated` on each
        inactive → active transition."""
        while True:
            try:
                body = await self.kube.get_cluster_peering(self.name)
                status = (body or {}).get("status") or {}
                now = datetime.now(UTC)
                active = may_write(status, self.identity, self.priority, now)
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as err:
                logger.warning("cannot read peering %s: %s", self.name, err)
                active = False
            if active != self.active:
                logger.info("peering %s: this replica is now %s", self.name,
                            "active" if active else "standing by")  # fmt: skip
                self.active = active
                if active:
                    on_activated()
            await asyncio.sleep(self.interval)
