#!/usr/bin/env bash
# bench.sh measures what the kubeskel skeleton costs next to a bare net/http
# server serving the same handlers (test/bench/bare), all in one run, and
# prints Markdown for BENCHMARKS.md. The whole run is long (every section, 5
# repetitions); -only and -reps make it shorter.
#
#   apt-get install wrk valgrind nghttp2-client linux-perf   # taskset comes with util-linux; h2load is in nghttp2-client; perf is optional
#   hack/bench.sh [-reps 5] [-duration 5s] [-only throughput,callgrind,...]
#
# Flags go to test/bench/run (go run -tags bench ./test/bench/run -h).
# Run it on an otherwise idle machine: the servers are pinned to the last CPU
# and the load generators to the others.
set -o errexit -o pipefail -o nounset
cd "$(dirname "$0")/.."

missing=()
for tool in wrk h2load valgrind callgrind_control cg_diff cg_annotate taskset; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if (( ${#missing[@]} )); then
  echo "bench.sh: missing ${missing[*]}; apt-get install wrk nghttp2-client valgrind util-linux" >&2
  exit 1
fi

go run -tags bench ./test/bench/run "$@"

echo
echo "## Go benchmarks of the per-request path (no network)"
echo
echo '```'
go test -run '^$' -bench BenchmarkMiddleware -benchmem -count 5 ./internal/server | grep -E '^(Benchmark|cpu:)'
go test -run '^$' -bench BenchmarkClock -count 5 ./internal/stopwatch | grep -E '^Benchmark'
go test -tags bench -run '^$' -bench . -benchmem -count 5 ./test/bench | grep -E '^Benchmark'
echo '```'
