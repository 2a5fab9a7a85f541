"""Property tests of two operator builders that users' specs feed:

- the seccomp profile builder: any set of observed syscalls, any default action, any
  node architectures gives a profile that libseccomp itself (what runc loads it with)
  reads back to exactly the observed syscalls, with the default action asked for;
- the label selector compiler: any selector compiles without error, the same from
  the wire dict and from the API model, whatever the order of its parts, and
  `matchLabels {k: v}` is `k In (v)`.
"""

from __future__ import annotations

import json
import random
import re
import tempfile

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_selectors import LABELS, reference_matches, selectors

from podtrace_api.base import LabelSelector
from podtrace_api.containertrace import SeccompAction
from podtrace_api.syscalls import name_of
from podtrace_operator.seccomp import (
    ARCHITECTURES,
    BIG_ENDIAN,
    DEFAULT_ARCH,
    profile,
    profile_json,
)
from podtrace_operator.selectors import compile_selector

seccomp = pytest.importorskip("seccomp", reason="libseccomp's Python binding (python3-seccomp)")

NATIVE = sorted({n for n in (name_of(i) for i in range(512)) if not n.startswith("syscall_")})
# What runc turns each default action into (libcontainer/seccomp/patchbpf and config).
ACTIONS = {
    SeccompAction.ERRNO: (seccomp.ERRNO(1), "ERRNO(1)"),
    SeccompAction.KILL_PROCESS: (seccomp.KILL_PROCESS, "KILL_PROCESS"),
    SeccompAction.KILL_THREAD: (seccomp.KILL, "KILL"),
    SeccompAction.TRAP: (seccomp.TRAP, "TRAP"),
    SeccompAction.LOG: (seccomp.LOG, "LOG"),
}
NODE_ARCHES = st.lists(st.sampled_from([*ARCHITECTURES, "mips64le", "", "x"]), max_size=3)


NATIVE_ARCH = next(
    f"SCMP_ARCH_{a}"
    for a in dir(seccomp.Arch)
    if a.isupper() and a != "NATIVE"
    and getattr(seccomp.Arch, a) % 2**32 == seccomp.system_arch() % 2**32
)  # fmt: skip


def architectures(doc: dict) -> list[str]:
    """The architectures a profile names, from either form (the loader's choice aside)."""
    if "archMap" in doc:
        return [a for e in doc["archMap"] for a in [e["architecture"], *e["subArchitectures"]]]
    return list(doc["architectures"])


def loaded_architectures(doc: dict) -> list[str]:
    """What moby's loader (containerd's, CRI-O's) adds to the filter on this machine:
    the flat list, or the archMap entry of the native architecture. A flat list of the
    other byte order is for nodes of that order only: here, nothing is added."""
    if "archMap" not in doc:
        native_order = NATIVE_ARCH in BIG_ENDIAN
        return [a for a in doc["architectures"] if (a in BIG_ENDIAN) == native_order]
    return [a for e in doc["archMap"] if e["architecture"] == NATIVE_ARCH
            for a in [e["architecture"], *e["subArchitectures"]]]  # fmt: skip


def allowed_by_libseccomp(doc: dict) -> tuple[set[str], str]:
    """Load a profile as runc does and read back, for this machine's architecture, the
    syscalls the filter allows and its default action (libseccomp's PFC export)."""
    action, _ = next(v for k, v in ACTIONS.items() if k.value == doc["defaultAction"])
    f = seccomp.SyscallFilter(defaction=action)
    for arch in loaded_architectures(doc):
        scmp = getattr(seccomp.Arch, arch.removeprefix("SCMP_ARCH_"))
        if scmp != seccomp.Arch.NATIVE and not f.exist_arch(scmp):
            f.add_arch(scmp)
    for rule in doc["syscalls"]:
        for name in rule["names"]:
            f.add_rule(seccomp.ALLOW, name)
    with tempfile.TemporaryFile() as out:
        f.export_pfc(out)
        out.seek(0)
        pfc = out.read().decode()
    native = pfc.split("# filter for arch ")[1]  # the native architecture comes first
    names = set(re.findall(r'# filter for syscall "([^"]+)"', native))
    (default,) = re.findall(r"# default action\n\s+action (\S+);", native)
    return names, default


@given(st.lists(st.sampled_from(NATIVE), max_size=60), st.sampled_from(list(SeccompAction)),
       NODE_ARCHES)  # fmt: skip
def test_libseccomp_reads_back_exactly_the_observed_syscalls(
    names: list[str], action: SeccompAction, arches: list[str]
) -> None:
    doc = json.loads(profile_json(names, action.value, arches))
    assert doc["defaultAction"] == action.value
    assert doc["syscalls"] == ([{"names": sorted(set(names)), "action": "SCMP_ACT_ALLOW"}]
                               if names else [])  # fmt: skip
    named = architectures(doc)
    assert len(named) == len(set(named))
    wanted = {a for arch in arches for a in ARCHITECTURES.get(arch, ARCHITECTURES[DEFAULT_ARCH])}
    assert set(named) == (wanted or set(ARCHITECTURES[DEFAULT_ARCH]))
    both_orders = {a in BIG_ENDIAN for a in named} == {True, False}
    assert ("archMap" in doc) == both_orders != ("architectures" in doc)
    allowed, default = allowed_by_libseccomp(doc)
    assert allowed == set(names)
    assert default == ACTIONS[action][1]


@given(st.lists(st.text(max_size=20), max_size=10), st.text(max_size=20),
       st.lists(st.text(max_size=10), max_size=4))  # fmt: skip
def test_any_input_gives_stable_json(names: list[str], action: str, arches: list[str]) -> None:
    text = profile_json(names, action, arches)
    shuffled = random.Random(0).sample(names, len(names))
    assert text == profile_json(shuffled, action, list(reversed(arches)))
    assert json.loads(text) == profile(names, action, arches)


# -- the label selector compiler ----------------------------------------------------------------


@given(selectors(), st.randoms(use_true_random=False))
def test_selectors_compile_the_same_in_any_order_and_from_the_model(
    selector: dict, rnd: random.Random
) -> None:
    compiled = compile_selector(selector)
    shuffled = dict(reversed(list(selector.items())))
    if "matchExpressions" in shuffled:
        exprs = [dict(e) for e in shuffled["matchExpressions"]]
        rnd.shuffle(exprs)
        for e in exprs:
            if "values" in e:
                e["values"] = rnd.sample(e["values"], len(e["values"]))
        shuffled["matchExpressions"] = exprs
    if "matchLabels" in shuffled:
        shuffled["matchLabels"] = dict(reversed(list(shuffled["matchLabels"].items())))
    assert compile_selector(shuffled) == compiled
    model = LabelSelector.model_validate(selector)
    assert compile_selector(model) == compiled
    assert compile_selector(LabelSelector.model_validate(model.to_wire())) == compiled


@given(st.dictionaries(st.sampled_from(["app", "tier", "x/y"]), st.sampled_from(["", "a", "b"]),
                       max_size=3), LABELS)  # fmt: skip
def test_match_labels_is_in_with_one_value(labels: dict[str, str], pod: dict[str, str]) -> None:
    as_in = {"matchExpressions": [{"key": k, "operator": "In", "values": [v]}
                                  for k, v in labels.items()]}  # fmt: skip
    assert compile_selector({"matchLabels": labels}) == compile_selector(as_in)
    assert compile_selector(as_in).matches(pod) == reference_matches(as_in, pod)


@given(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
       st.lists(st.fixed_dictionaries({"key": st.text(max_size=5),
                                       "operator": st.text(max_size=12),
                                       "values": st.lists(st.text(max_size=5), max_size=3)}),
                max_size=3))  # fmt: skip
def test_any_wire_selector_compiles_or_names_its_operator(labels: dict, exprs: list) -> None:
    selector = {"matchLabels": labels, "matchExpressions": exprs}
    if all(e["operator"] in ("In", "NotIn", "Exists", "DoesNotExist") for e in exprs):
        compile_selector(selector).matches(labels)
    else:
        with pytest.raises(ValueError, match="unknown label selector operator"):
            compile_selector(selector)
