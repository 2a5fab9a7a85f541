"""Object and file names built from user-chosen names, kept within their limits.

    >>> trim("abc", 63)
    'abc'
    >>> t = trim("a" * 60 + ".-" + "b" * 10, 63); len(t), t[:50] == "a" * 50
    (63, True)
"""

from __future__ import annotations

import hashlib

HASH_LEN = 10


def trim(text: str, limit: int) -> str:
    """`text` when it fits in `limit`, else a prefix and a hash of the whole of it (still a
    valid DNS name, label value or file name: the prefix is cut back to end alphanumeric),
    so two long names that share a prefix stay apart."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]
    prefix = text[: limit - HASH_LEN - 1].rstrip(".-")
    return f"{prefix}-{digest}"
