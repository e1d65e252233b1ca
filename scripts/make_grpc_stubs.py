"""Regenerate the committed gRPC stubs of lipsync_cli/serve/rpc/*.proto (needs grpcio-tools 1.78.2, in the dev
extra):

    python scripts/make_grpc_stubs.py

That grpcio-tools is pinned: its code runs on protobuf 6.31.1 and newer, so the stubs work with the protobuf 6
that Pipecat requires as with protobuf 7 (newer grpcio-tools make code that needs protobuf 7).

protoc is given the repository root as its include path, so the generated modules import each other by
their package path (lipsync_cli.serve.rpc.monolithic_pb2) and need nothing on sys.path.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTOS = REPO / "lipsync_cli" / "serve" / "rpc"


TOOLS = "1.78.2"


def main() -> int:
    from importlib import metadata

    from grpc_tools import protoc

    if metadata.version("grpcio-tools") != TOOLS:
        print(f"grpcio-tools {TOOLS} is needed (pip install grpcio-tools=={TOOLS}), not "
              f"{metadata.version('grpcio-tools')}: its stubs would need a newer protobuf", file=sys.stderr)
        return 1

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
