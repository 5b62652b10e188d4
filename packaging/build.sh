#!/bin/sh
# Builds the static sesame binary: the one build command, used by the
# Dockerfile, by docs/install.md and by packaging_test.go.
#
#   VERSION=1.2.3 OUT=/tmp/out sh packaging/build.sh   ->  /tmp/out/sesame
#
# VERSION (default: dev) is what `sesame --version` prints. OUT (default: the
# repository root) is the output directory. GOOS and GOARCH, when set, cross
# compile as usual. CGO_ENABLED=0: the SQLite store is pure Go, so the binary
# needs no C library and runs on scratch, distroless or any Linux.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
version=${VERSION:-dev}
out=${OUT:-$root}

cd "$root"
mkdir -p "$out"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$out/sesame" ./cmd/sesame
