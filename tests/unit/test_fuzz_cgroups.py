"""Property tests of what the agent reads about cgroups and mounts: the cgroup path →
identity parser, /proc/<pid>/mountinfo, /proc/<pid>/cgroup and /proc/filesystems.

Two kinds of property: nothing raises, whatever the text (random, or a valid path
or line with random edits); and round trips: a line written the way the kernel
writes it parses back to what was written.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st
from test_identity import layouts

from podtrace_agent.discovery.procfs import (
    Mount,
    ProcCgroup,
    cgroup2_path,
    parse_filesystems,
    parse_mountinfo,
    parse_proc_cgroup,
    unescape,
)
from podtrace_agent.identity import CgroupIdentity, parse

# Text the kernel may hand over: any character but NUL, the separators included.
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=200)
TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789_=.+", min_size=1, max_size=12)


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    """`text` with a few characters replaced, inserted or deleted, or cut short."""
    chars = list(text)
    alphabet = st.sampled_from("/-_.:0123456789abcdefkpodsliceubrt \n\\") | st.characters()
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(chars)))
        edit = draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        if edit == "insert" or (edit == "replace" and at == len(chars)):
            chars.insert(at, draw(alphabet))
        elif edit == "replace":
            chars[at] = draw(alphabet)
        elif edit == "delete" and at < len(chars):
            del chars[at]
        elif edit == "cut":
            chars = chars[:at]
    return "".join(chars)


# -- the cgroup path → identity parser ----------------------------------------------------------


@given(layouts().flatmap(lambda case: mutated(case[0])))
def test_identity_of_an_edited_kubelet_path_never_raises(path: str) -> None:
    found = parse(path)
    assert found is None or isinstance(found, CgroupIdentity)
    if found is not None:  # whatever it found is well formed
        assert found.pod_uid and "_" not in found.pod_uid
        assert found.container_id is None or len(found.container_id) == 64


@given(layouts(), st.sampled_from(["", "/", "//"]), st.sampled_from(["", "/"]))
def test_identity_ignores_empty_path_parts(case: tuple[str, CgroupIdentity], lead: str,
                                           trail: str) -> None:  # fmt: skip
    path, expected = case
    assert parse(lead + path.strip("/").replace("/", "//") + trail) == expected


# -- /proc/<pid>/mountinfo ------------------------------------------------------------------------


def kernel_escape(text: str) -> str:
    """How the kernel writes a path in mountinfo (fs/proc_namespace.c, mangle()):
    space, tab, newline and backslash as three octal digits."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in text)


PATHS = st.lists(TEXT.filter(lambda s: "/" not in s), max_size=4).map(lambda p: "/" + "/".join(p))
OPTIONS = st.lists(TOKEN, min_size=1, max_size=4).map(tuple)
OPTIONAL = st.lists(
    st.sampled_from(["shared:", "master:", "propagate_from:"]).flatmap(
        lambda tag: st.integers(1, 999).map(lambda n: f"{tag}{n}")) | st.just("unbindable"),
    max_size=3,
)  # fmt: skip


@st.composite
def mounts(draw: st.DrawFn) -> tuple[str, Mount]:
    mount = Mount(
        mount_id=draw(st.integers(0, 2**31)),
        parent_id=draw(st.integers(0, 2**31)),
        root=draw(PATHS),
        mount_point=draw(PATHS),
        fstype=draw(TOKEN),
        source=draw(TEXT.filter(bool)),
        options=draw(OPTIONS),
        super_options=draw(OPTIONS),
    )
    line = " ".join([
        str(mount.mount_id), str(mount.parent_id), f"{draw(st.integers(0, 255))}:"
        f"{draw(st.integers(0, 255))}", kernel_escape(mount.root),
        kernel_escape(mount.mount_point), ",".join(mount.options), *draw(OPTIONAL), "-",
        mount.fstype, kernel_escape(mount.source), ",".join(mount.super_options),
    ])  # fmt: skip
    return line, mount


@given(st.lists(mounts(), max_size=5))
@example([("36 35 98:0 /a\\040b /mnt rw - cgroup2 cgroup2 rw",
           Mount(36, 35, "/a b", "/mnt", "cgroup2", "cgroup2", ("rw",), ("rw",)))])  # fmt: skip
def test_mountinfo_lines_parse_back_to_what_the_kernel_wrote(
    cases: list[tuple[str, Mount]],
) -> None:
    text = "".join(line + "\n" for line, _ in cases)
    assert parse_mountinfo(text) == [mount for _, mount in cases]


@given(st.lists(mounts(), min_size=1, max_size=3).flatmap(
    lambda cases: mutated("\n".join(line for line, _ in cases))))  # fmt: skip
def test_mountinfo_with_edits_never_raises(text: str) -> None:
    for mount in parse_mountinfo(text):
        assert isinstance(mount, Mount)


@given(TEXT)
def test_unescape_inverts_the_kernels_escape(text: str) -> None:
    assert unescape(kernel_escape(text)) == text


# -- /proc/<pid>/cgroup and /proc/filesystems ----------------------------------------------------


@st.composite
def proc_cgroups(draw: st.DrawFn) -> ProcCgroup:
    v2 = draw(st.booleans())
    return ProcCgroup(
        hierarchy_id=0 if v2 else draw(st.integers(1, 64)),
        controllers=() if v2 else draw(st.lists(TOKEN, min_size=1, max_size=3).map(tuple)),
        path=draw(TEXT.filter(lambda s: "\n" not in s)),
    )


def cgroup_line(entry: ProcCgroup) -> str:
    return f"{entry.hierarchy_id}:{','.join(entry.controllers)}:{entry.path}"


@given(st.lists(proc_cgroups(), max_size=6))
@example([ProcCgroup(0, (), "/a:b\x85c")])  # a NEL inside a path is not a line break
def test_proc_cgroup_lines_parse_back(entries: list[ProcCgroup]) -> None:
    text = "".join(cgroup_line(e) + "\n" for e in entries)
    assert parse_proc_cgroup(text) == entries
    v2 = [e.path for e in entries if e.hierarchy_id == 0 and not e.controllers]
    assert cgroup2_path(parse_proc_cgroup(text)) == (v2[0] if v2 else None)


@given(st.lists(proc_cgroups(), min_size=1, max_size=3).flatmap(
    lambda es: mutated("\n".join(cgroup_line(e) for e in es))))  # fmt: skip
def test_proc_cgroup_with_edits_never_raises(text: str) -> None:
    for entry in parse_proc_cgroup(text):
        assert entry.hierarchy_id >= 0 and "" not in entry.controllers


@given(st.lists(st.tuples(st.booleans(), TOKEN), max_size=8))
def test_filesystems_parse_back(rows: list[tuple[bool, str]]) -> None:
    text = "".join(f"{'nodev' if nodev else ''}\t{name}\n" for nodev, name in rows)
    assert parse_filesystems(text) == {name for _, name in rows}


@given(TEXT)
def test_filesystems_never_raise(text: str) -> None:
    assert all(isinstance(name, str) and name for name in parse_filesystems(text))
