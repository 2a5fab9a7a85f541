"""The core's container bookkeeping: a container's cgroups (its own and its
sub-cgroups), counts that add up and never go down, and nothing kept of a
container once its last cgroup is gone."""

from __future__ import annotations

from podtrace_agent.core import Containers
from podtrace_agent.identity import parse
from podtrace_agent.scan import ContainerCgroup

UID = "11111111-2222-4333-8444-555555555555"
A, B = "a" * 64, "b" * 64
POD = f"kubepods/besteffort/pod{UID}"


def cgroup(cgroup_id: int, path: str) -> ContainerCgroup:
    identity = parse(path)
    assert identity is not None
    return ContainerCgroup(cgroup_id, path, identity)


def test_a_container_and_its_subgroups() -> None:
    containers = Containers(skip_container=B)
    first = containers.add(cgroup(10, f"{POD}/crio-{A}.scope"))
    sub = containers.add(cgroup(11, f"{POD}/crio-{A}.scope/container"))
    assert first is not None and first.new
    assert sub is not None and not sub.new and sub.container is first.container
    assert containers.add(cgroup(10, f"{POD}/crio-{A}.scope")) is None  # scan and mkdir
    assert containers.add(cgroup(12, f"{POD}/{B}")) is None  # the agent's own
    container = first.container
    assert (container.primary, container.key_cgroup, container.subgroups()) == (
        10, 10, {11: f"{POD}/crio-{A}.scope/container"})
    assert containers.of_cgroup(11) is container and containers.get(A) is container
    assert (len(containers), containers.cgroup_count) == (1, 2)


def test_a_subgroup_seen_before_its_container() -> None:
    containers = Containers()
    added = containers.add(cgroup(11, f"{POD}/crio-{A}.scope/container"))
    assert added is not None and added.container.primary is None
    assert added.container.key_cgroup == 11
    containers.add(cgroup(10, f"{POD}/crio-{A}.scope"))
    assert added.container.key_cgroup == 10


def test_counts_add_up_and_survive_a_removed_subgroup() -> None:
    containers = Containers()
    containers.add(cgroup(10, f"{POD}/crio-{A}.scope"))
    containers.add(cgroup(11, f"{POD}/crio-{A}.scope/container"))
    containers.add(cgroup(20, f"{POD}/{B}"))
    changed = containers.take_counts({10: {0: 1}, 11: {0: 2, 39: 5}, 99: {0: 7}})
    assert [c.container_id for c in changed] == [A]
    a = containers.get(A)
    assert a is not None and dict(a.syscalls()) == {0: 3, 39: 5}
    assert containers.take_counts({10: {0: 1}, 11: {0: 2, 39: 5}}) == []  # nothing new
    containers.take_counts({11: {0: 4, 39: 5}})  # the sub-cgroup's final counts
    removed = containers.remove(11)
    assert removed is not None and not removed.gone
    assert dict(a.syscalls()) == {0: 5, 39: 5}  # carried: the total does not go down
    containers.take_counts({10: {0: 2}})
    assert dict(a.syscalls()) == {0: 6, 39: 5}


def test_the_last_cgroup_takes_the_container() -> None:
    containers = Containers()
    containers.add(cgroup(10, f"{POD}/crio-{A}.scope"))
    containers.add(cgroup(11, f"{POD}/crio-{A}.scope/container"))
    containers.take_counts({10: {0: 1}})
    assert containers.remove(99) is None
    containers.remove(11)
    removed = containers.remove(10)
    assert removed is not None and removed.gone and removed.path == f"{POD}/crio-{A}.scope"
    # what it did stays readable for its last report, but nothing keeps it
    assert (removed.container.key_cgroup, dict(removed.container.syscalls())) == (10, {0: 1})
    assert (len(containers), containers.cgroup_count, list(containers)) == (0, 0, [])
    assert containers.get(A) is None and containers.of_cgroup(10) is None
