"""gRPC faces of `lipsync serve`: the seed's `monolithic.MonolithicService` and `lipsync.v1.Live` (stubs generated from
the .proto files beside this by scripts/make_grpc_stubs.py)."""
