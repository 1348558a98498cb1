#!/usr/bin/env bash
# The project's test command (README.md): everything, interop included.
# FUZZTIME sets the bounded fuzzing time per target (default 10s; 0 skips it).
set -euo pipefail
cd "$(dirname "$0")"

fuzztime="${FUZZTIME:-10s}"

echo "== vet"
go vet ./...
(cd interop && go vet ./...)

echo "== unit tests"
go test -count=1 ./...

echo "== race detector on the concurrent parts (raft loop, apply, compaction worker, WAL zeroer)"
go test -count=1 -race ./server ./engine ./mvcc
go test -count=1 -race -run 'ZeroAhead|Crash' ./wal

echo "== interop (differential tests against etcd's own modules)"
(cd interop && go test -count=1 -timeout 30m ./...)
(cd interop/etcd36 && go vet ./... && go test -count=1 ./...)

if [ "$fuzztime" != "0" ]; then
  echo "== bounded fuzzing ($fuzztime per target)"
  # package:target pairs; each target's corpus lives in <package>/testdata/fuzz.
  for pt in $(grep -rhoE --include='*_test.go' '^func (Fuzz[A-Za-z0-9_]+)' --with-filename . \
      | grep -v '^./interop/' | sed -E 's#^\./(.*)/[^/]+_test\.go:func (Fuzz.*)#\1:\2#' | sort -u); do
    pkg="${pt%%:*}"; target="${pt##*:}"
    go test -run "^$" -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 5s "./$pkg"
  done
fi
echo "== all tests passed"
