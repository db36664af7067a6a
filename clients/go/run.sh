#!/usr/bin/env bash
# Generate, build and run the Go example with Debian's Go packages (GOPATH mode;
# no module proxy):
#   apt-get install golang-go golang-google-grpc-dev golang-google-genproto-dev \
#     golang-github-golang-protobuf-1-5-dev protoc-gen-go protoc-gen-go-grpc
#   clients/go/run.sh http://127.0.0.1:9000        (NOTIFY_GRPC_ADDR: the scheduler)
set -euo pipefail
cd "$(dirname "$0")/../.."
buf=${BUF:-$(command -v buf || echo .venv/bin/buf)}
rm -rf clients/go/gopath
"$buf" generate --template clients/go/buf.gen.yaml
GO111MODULE=off GOPATH="$PWD/clients/go/gopath:/usr/share/gocode" GOCACHE="${GOCACHE:-${HOME:-/tmp}/.cache/go-build}" \
  go build -o clients/go/gopath/bin/example ./clients/go
exec clients/go/gopath/bin/example "$@"
