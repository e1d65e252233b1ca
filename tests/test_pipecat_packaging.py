"""`pip install 'lipsync-cli[pipecat]'` as a user runs it (the pipecat nox session's environment): Pipecat's
protobuf (<7) carries lipsync's gRPC stubs, and the two onnxruntime distributions pip installs over one module
are reported by `lipsync doctor`, with the command that mends them."""

import json
from importlib import metadata

import pytest
from typer.testing import CliRunner

from lipsync_cli.cli.app import app

pytestmark = pytest.mark.pipecat


def test_pipecats_protobuf_carries_the_grpc_stubs():
    assert int(metadata.version("protobuf").split(".")[0]) < 7
    from lipsync_cli.serve.rpc import live_pb2, monolithic_pb2

    message = monolithic_pb2.CompositeBatchRequest(model_id="alice", batch_size=3)
    assert monolithic_pb2.CompositeBatchRequest.FromString(message.SerializeToString()).batch_size == 3
    assert live_pb2.Start(return_rate=24000).return_rate == 24000


def test_doctor_reports_both_onnxruntime_distributions():
    names = {metadata.version(name): name for name in ("onnxruntime", "onnxruntime-gpu")
             if _installed(name)}
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    if len(names) < 2:  # where lipsync's own requirement is the CPU distribution (no onnxruntime-gpu wheels)
        assert "onnxruntime packages" not in checks
        return
    row = checks["onnxruntime packages"]
    assert row["status"] == "warning"
    for version, name in names.items():
        assert f"{name} {version}" in row["found"]
    assert f"onnxruntime-gpu=={metadata.version('onnxruntime-gpu')}" in row["fix"]


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False
