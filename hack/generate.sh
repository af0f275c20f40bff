#!/usr/bin/env bash
# generate.sh regenerates the checked-in protobuf and gRPC Go code with
# Debian's protoc and the pinned protoc-gen-go / protoc-gen-go-grpc built by
# hack/tools.sh.
set -o errexit -o pipefail -o nounset
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "generate.sh: protoc not found; apt-get install protobuf-compiler" >&2; exit 1; }
gen_go=$(hack/tools.sh protoc-gen-go)
gen_grpc=$(hack/tools.sh protoc-gen-go-grpc)
for proto in $(find internal -name '*.proto' | sort); do
  protoc --proto_path=. \
    --plugin=protoc-gen-go="$gen_go" --go_out=. --go_opt=paths=source_relative \
    --plugin=protoc-gen-go-grpc="$gen_grpc" --go-grpc_out=. --go-grpc_opt=paths=source_relative \
    "$proto"
done
