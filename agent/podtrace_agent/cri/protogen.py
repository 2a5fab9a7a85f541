"""Generate the CRI stubs (`api_pb2.py`, `api_pb2.pyi`, `api_pb2_grpc.py`) from api.proto.

`make proto` runs this; a unit test runs it into a temporary directory and fails
when the committed stubs differ. Needs grpcio-tools (a dev dependency only).

The proto is compiled as `podtrace_agent/cri/api.proto` (not `api.proto`) so its
name in protobuf's process-wide descriptor pool cannot collide with another
library's `api.proto`. grpcio-tools then writes an absolute import of the
messages module into the service stubs; it is rewritten to a relative one so the
stubs do not depend on how the package is installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE_DIR.parents[1]  # the directory that holds podtrace_agent/
PROTO = PACKAGE_DIR.relative_to(SOURCE_ROOT) / "api.proto"
OUTPUTS = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")

_ABSOLUTE_IMPORT = "from podtrace_agent.cri import api_pb2 as"
_RELATIVE_IMPORT = "from . import api_pb2 as"


def generate(out_dir: Path) -> list[Path]:
    """Write the stubs into `out_dir` (flat); returns the files written."""
    from grpc_tools import protoc  # dev dependency: imported only when generating

    staging = out_dir / ".protogen"
    args = [
        "grpc_tools.protoc",
        f"-I{SOURCE_ROOT}",
        f"--python_out={staging}",
        f"--pyi_out={staging}",
        f"--grpc_python_out={staging}",
        str(SOURCE_ROOT / PROTO),
    ]
    staging.mkdir(parents=True, exist_ok=True)
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {PROTO}")
    written = []
    for name in OUTPUTS:
        generated = staging / PROTO.parent / name
        text = generated.read_text()
        if name == "api_pb2_grpc.py":
            if _ABSOLUTE_IMPORT not in text:
                raise RuntimeError(f"grpcio-tools changed its import line in {name}")
            text = text.replace(_ABSOLUTE_IMPORT, _RELATIVE_IMPORT)
        target = out_dir / name
        target.write_text(text)
        written.append(target)
        generated.unlink()
    for d in sorted(staging.rglob("*"), reverse=True):
        d.rmdir()
    staging.rmdir()
    return written


def main() -> int:
    for path in generate(PACKAGE_DIR):
        print(f"protogen: wrote {path.relative_to(SOURCE_ROOT.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
