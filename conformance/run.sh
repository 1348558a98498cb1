#!/usr/bin/env bash
# Runs etcd's own test suite (go.etcd.io/etcd/tests/v3 v3.7.3, build tag
# e2e) twice with the same selection: with `etckit serve` as the etcd binary
# of its e2e framework, and with etcd 3.7.3 built from the module proxy.
# In both runs the framework's "last release" binary is that etcd 3.7.3,
# so its MinorityLastVersion and QuorumLastVersion cases are 3-member
# clusters mixing the two. Then it compares the results (compare/): a test
# that passes against etcd must pass against etckit unless expected.txt
# names it with a reason.
#
#   CONFORMANCE_PKGS  packages of the suite (default: tests/common)
#   CONFORMANCE_RUN   go test -run selections, one per line, run in turn
#                     (default: everything)
#   CONFORMANCE_TIMEOUT  per go test run (default 30m)
#   CONFORMANCE_IMPLS    which runs (default "etcd etckit")
set -euo pipefail
cd "$(dirname "$0")"
pkgs="${CONFORMANCE_PKGS:-go.etcd.io/etcd/tests/v3/common}"
run="${CONFORMANCE_RUN:-.}"
timeout="${CONFORMANCE_TIMEOUT:-30m}"
impls="${CONFORMANCE_IMPLS:-etcd etckit}" # etckit alone reuses results/etcd.log

mkdir -p bin results bin-etcd bin-etckit
(cd .. && go build -o conformance/bin/etckit ./cmd/etckit)
go build -o bin/etcd-3.7.3 go.etcd.io/etcd/server/v3
go build -o bin/etcdctl go.etcd.io/etcd/etcdctl/v3
go build -o bin/etcdutl go.etcd.io/etcd/etcdutl/v3
for d in bin-etcd bin-etckit; do
  ln -sf ../bin/etcdctl "$d/etcdctl"
  ln -sf ../bin/etcdutl "$d/etcdutl"
  ln -sf ../bin/etcd-3.7.3 "$d/etcd-last-release"
done
ln -sf ../bin/etcd-3.7.3 bin-etcd/etcd
printf '#!/bin/sh\nexec "%s/bin/etckit" serve "$@"\n' "$PWD" > bin-etckit/etcd
chmod +x bin-etckit/etcd

for impl in $impls; do
  : > "results/$impl.log"
  while IFS= read -r sel; do
    [ -n "$sel" ] || continue
    echo "== etcd's suite ($pkgs, -run '$sel') against $impl"
    # A failing test is the comparison's business, not this script's.
    go test -tags e2e $pkgs -run "$sel" -count=1 -v -timeout "$timeout" -args -bin-dir "$PWD/bin-$impl" \
      >> "results/$impl.log" 2>&1 || true
    grep -E '^(ok|FAIL)\s' "results/$impl.log" | tail -1
  done <<< "$run"
done
go run ./compare -etcd results/etcd.log -etckit results/etckit.log -expected expected.txt -md results/table.md
