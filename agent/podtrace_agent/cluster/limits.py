"""Whether one source fits what the backend can program (pure).

Admission bounds every field of a source by the kernel side's limits in
characters; what it cannot see (bytes of a non-ASCII path, a backend with
smaller limits) is checked here, per source, before anything is traced. A
source that does not fit is reported LimitExceeded and skipped; the other
sources of the same container and node trace as usual.
"""

from __future__ import annotations

from podtrace_api.nodetracer import TraceSource

from ..backend import SourceLimits


def open_prefixes(source: TraceSource) -> list[str]:
    """Every open path prefix a source asks for: fileOpens and its rules, in order, once."""
    found: list[str] = []
    if source.observe.file_opens is not None:
        found += source.observe.file_opens.path_prefixes
    for rule in source.rules:
        found += rule.open_path_prefixes or ()
    return list(dict.fromkeys(found))


def source_problem(source: TraceSource, limits: SourceLimits) -> str | None:
    """Why `source` cannot be programmed into a backend with `limits`, or None.

    >>> from podtrace_api.observe import FileOpenObserve, ObserveSpec
    >>> s = TraceSource(id="TracingPolicy/p", kind="TracingPolicy", name="p",
    ...     observe=ObserveSpec(file_opens=FileOpenObserve(path_prefixes=["/" + "é" * 40])))
    >>> source_problem(s, SourceLimits(open_prefix_bytes=64))
    'open path prefix /ééééééééé… is 81 bytes long; the kernel side compares at most 64'
    """
    prefixes = open_prefixes(source)
    if limits.open_prefix_bytes is not None:
        for prefix in prefixes:
            size = len(prefix.encode())
            if size > limits.open_prefix_bytes:
                return (f"open path prefix {_short(prefix)} is {size} bytes long; the kernel "
                        f"side compares at most {limits.open_prefix_bytes}")
    if limits.open_prefixes is not None and len(prefixes) > limits.open_prefixes:
        return (f"{len(prefixes)} open path prefixes; a container can have at most "
                f"{limits.open_prefixes}")
    connects = source.observe.connects
    ports = set(connects.ports) if connects is not None else set()
    if limits.connect_ports is not None and len(ports) > limits.connect_ports:
        return f"{len(ports)} connect ports; a container can have at most {limits.connect_ports}"
    if limits.exec_filename_bytes is not None:
        for rule in source.rules:
            for filename in rule.exec_filenames or ():
                size = len(filename.encode())
                if size > limits.exec_filename_bytes:
                    return (f"rule {rule.name}: exec filename {_short(filename)} is {size} bytes "
                            f"long; the kernel side reports at most {limits.exec_filename_bytes}")
    return None


def _short(text: str, keep: int = 10) -> str:
    return text if len(text) <= keep else text[:keep] + "…"
