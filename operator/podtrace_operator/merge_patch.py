"""JSON merge patches (RFC 7386) that turn what the apiserver holds into what
the operator wants. A merge patch merges maps key by key, so a key that is no
longer wanted must be sent as null; lists are replaced whole."""

from __future__ import annotations

from typing import Any


def replace_patch(old: Any, new: Any) -> Any:
    """The merge patch that makes `old` equal to `new` (no None values in `new`).

    >>> replace_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": 2}, "e": [1]})
    {'a': None, 'b': {'d': None, 'c': 2}, 'e': [1]}
    """
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        patch[key] = replace_patch(old.get(key), value) if isinstance(value, dict) else value
    return patch


def apply_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 applied to `target` (what the apiserver does with a merge patch).

    >>> apply_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"a": None, "b": {"d": None}})
    {'b': {'c': 2}}
    """
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_patch(out.get(key), value)
    return out
