"""Regenerate the committed gRPC stubs of lipsync_cli/serve/rpc/*.proto (needs grpcio-tools, in the dev extra):

    python scripts/make_grpc_stubs.py

protoc is given the repository root as its include path, so the generated modules import each other by
their package path (lipsync_cli.serve.rpc.monolithic_pb2) and need nothing on sys.path.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTOS = REPO / "lipsync_cli" / "serve" / "rpc"


def main() -> int:
    from grpc_tools import protoc

    for proto in sorted(PROTOS.glob("*.proto")):
        relative = proto.relative_to(REPO)
        args = ["protoc", f"-I{REPO}", f"--python_out={REPO}", f"--pyi_out={REPO}", f"--grpc_python_out={REPO}",
                str(relative)]
        if protoc.main(args) != 0:
            print(f"protoc failed on {relative}", file=sys.stderr)
            return 1
        print(f"generated the stubs of {relative}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
