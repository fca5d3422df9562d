#!/usr/bin/env bash
# Regenerates app/proto/*_pb2.py(+.pyi) from app/proto/*.proto (sdkws, jssdk).
# Needs grpcio-tools (requirements-dev.txt); the generated files are committed.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -I app/proto --python_out=app/proto --pyi_out=app/proto app/proto/sdkws.proto app/proto/jssdk.proto
