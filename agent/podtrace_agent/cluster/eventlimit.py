"""Deduplication and rate limiting of the Kubernetes Events the agent raises.

Each (pod, source, rule) is one event series, as events.k8s.io/v1 models it:
the first match creates an Event, later matches bump the series count, and the
apiserver sees at most one write per series per interval however fast the
container misbehaves. A per-pod budget caps how many distinct series one pod
can open per interval, so a pod cannot flood the Events API by varying what it
does. Pure: time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Action(Enum):
    CREATE = "create"  # a new Event
    UPDATE = "update"  # bump the series of an existing Event
    NONE = "none"  # nothing to write now


@dataclass
class Series:
    """One event series: how often it matched, and what the apiserver knows."""

    key: tuple[str, str, str]
    count: int = 0
    reported: int = 0  # the count the apiserver has
    created: bool = False
    last_write: float = float("-inf")
    first_seen: float = 0.0
    last_seen: float = 0.0
    last_what: str = ""
    suppressed: int = 0  # matches of series that the per-pod budget kept from opening


@dataclass
class EventLimiter:
    """Decides when to write which Event. `interval` seconds between writes of a
    series; at most `per_pod_series` new series per pod per interval."""

    interval: float = 30.0
    per_pod_series: int = 10
    max_series: int = 4096
    _series: dict[tuple[str, str, str], Series] = field(default_factory=dict)
    _opened: dict[str, list[float]] = field(default_factory=dict)

    def record(self, pod: str, source: str, rule: str, what: str, now: float, count: int = 1
               ) -> Series | None:
        """Count a match. Returns the series, or None when the pod's budget refused it."""
        key = (pod, source, rule)
        series = self._series.get(key)
        if series is None:
            recent = [t for t in self._opened.get(pod, []) if now - t < self.interval]
            if len(recent) >= self.per_pod_series or len(self._series) >= self.max_series:
                self._opened[pod] = recent
                return None
            recent.append(now)
            self._opened[pod] = recent
            series = self._series[key] = Series(key=key, first_seen=now)
        series.count += count
        series.last_seen = now
        series.last_what = what
        return series

    def due(self, now: float) -> list[tuple[Action, Series]]:
        """The writes to make now; the caller reports success with `written`."""
        out = []
        for series in self._series.values():
            if series.count == series.reported or now - series.last_write < self.interval:
                continue
            out.append((Action.UPDATE if series.created else Action.CREATE, series))
        return out

    def written(self, series: Series, now: float, count: int | None = None) -> None:
        """The apiserver accepted the write of `series` made at `now`, with `count`
        (default: its count now; a write that ran while more matches came in
        reported fewer, and the rest is due at the next interval)."""
        series.created = True
        series.reported = series.count if count is None else count
        series.last_write = now

    def failed(self, series: Series, now: float) -> None:
        """The write of `series` made at `now` failed: it is due again one interval
        later, not at every tick (an apiserver that is down is not asked once a second
        per series); the matches meanwhile are counted and go with that write."""
        series.last_write = now

    def series(self, key: tuple[str, str, str]) -> Series | None:
        return self._series.get(key)

    def forget_pod(self, pod: str) -> None:
        """Drop the series of a pod that is gone."""
        for key in [k for k in self._series if k[0] == pod]:
            del self._series[key]
        self._opened.pop(pod, None)
