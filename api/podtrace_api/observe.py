"""What to observe and which rules raise Events: shared by TracingPolicy,
ContainerTrace and the compiled NodeTracer spec."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field

from .base import (
    ABS_PATH_PATTERN,
    REASON_PATTERN,
    SET,
    DNSLabel,
    Message,
    Model,
    SyscallName,
    cel,
    list_map,
)
from .limits import (
    CONNECT_PORTS_PER_SOURCE,
    EXEC_FILENAME_BYTES,
    OPEN_PREFIX_BYTES,
    OPEN_PREFIXES_PER_SOURCE,
)

# An open path prefix as the kernel compares it (at most OPEN_PREFIX_BYTES).
PathPrefix = Annotated[
    str, Field(min_length=1, max_length=OPEN_PREFIX_BYTES, pattern=ABS_PATH_PATTERN)
]
# An exec filename as the kernel reports it (at most EXEC_FILENAME_BYTES).
ExecPath = Annotated[
    str, Field(min_length=1, max_length=EXEC_FILENAME_BYTES, pattern=ABS_PATH_PATTERN)
]


class SyscallMode(StrEnum):
    NONE = "None"
    ALL = "All"
    NAMED = "Named"


class SyscallObserve(Model):
    """Per-container syscall counting."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.mode == 'Named' ? (has(self.names) && size(self.names) > 0)"
                " : (!has(self.names) || size(self.names) == 0)",
                "names must be set when mode is Named, and only then",
                ".names",
            )
        )
    )

    mode: SyscallMode = Field(
        default=SyscallMode.ALL,
        description="None: do not count syscalls. All: count every syscall by name. "
        "Named: count only the syscalls listed in names.",
    )
    names: list[SyscallName] = Field(
        default_factory=list,
        max_length=128,
        description="Syscall names (as libseccomp knows them, e.g. openat) counted when "
        "mode is Named.",
        json_schema_extra=SET,
    )


class ProcessObserve(Model):
    """Process lifecycle events."""

    exec: bool = Field(default=True, description="Report every exec with its filename.")
    exit: bool = Field(default=False, description="Report every process exit with its code.")


class FileOpenObserve(Model):
    """File opens (openat) filtered in the kernel by path prefix."""

    path_prefixes: list[PathPrefix] = Field(
        min_length=1,
        max_length=OPEN_PREFIXES_PER_SOURCE,
        description="Absolute path prefixes of at most 64 bytes; an open is reported when "
        "its path starts with one of them, e.g. /etc/.",
        json_schema_extra=SET,
    )


class ConnectObserve(Model):
    """Outbound connections (connect)."""

    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=list,
        max_length=CONNECT_PORTS_PER_SOURCE,
        description="Only report connects to these destination ports; empty means all ports.",
        json_schema_extra=SET,
    )


class ObserveSpec(Model):
    """What to observe in each selected container."""

    syscalls: SyscallObserve = Field(
        default_factory=SyscallObserve, description="Syscall counting."
    )
    processes: ProcessObserve = Field(
        default_factory=ProcessObserve, description="Process exec and exit events."
    )
    file_opens: FileOpenObserve | None = Field(
        default=None, description="File opens under path prefixes; off when absent."
    )
    connects: ConnectObserve | None = Field(
        default=None, description="Outbound connects; off when absent."
    )


class EventType(StrEnum):
    WARNING = "Warning"
    NORMAL = "Normal"


class Rule(Model):
    """A rule that raises a Kubernetes Event on the Pod when it matches. Exactly
    one of execFilenames, syscalls or openPathPrefixes is set."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "[has(self.execFilenames), has(self.syscalls), has(self.openPathPrefixes)]"
                ".filter(x, x).size() == 1",
                "set exactly one of execFilenames, syscalls or openPathPrefixes",
            )
        )
    )

    name: DNSLabel = Field(description="The rule's name, unique within its policy.")
    reason: str = Field(
        min_length=1,
        max_length=128,
        pattern=REASON_PATTERN,
        description="The Event reason in CamelCase, e.g. ShellInContainer.",
    )
    type: EventType = Field(default=EventType.WARNING, description="The Event type.")
    message: Message = Field(
        default="", description="Extra text for the Event message (who/what is added)."
    )
    exec_filenames: list[ExecPath] | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description="Matches an exec of one of these absolute filenames (at most 255 bytes), "
        "e.g. /bin/sh.",
        json_schema_extra=SET,
    )
    syscalls: list[SyscallName] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Matches any call of one of these syscalls (a deny list).",
        json_schema_extra=SET,
    )
    open_path_prefixes: list[PathPrefix] | None = Field(
        default=None,
        min_length=1,
        max_length=OPEN_PREFIXES_PER_SOURCE,
        description="Matches an open of a path under one of these prefixes (at most 64 "
        "bytes each).",
        json_schema_extra=SET,
    )


Rules = Annotated[
    list[Rule],
    Field(
        default_factory=list,
        max_length=32,
        description="Rules that raise Events when they match; names are unique.",
        json_schema_extra=list_map("name"),
    ),
]
