#!/usr/bin/env bash
# promlint.sh runs `promtool check metrics` on a real /metrics scrape: it
# builds kubeskel, starts it on 127.0.0.1:0 ports (read back from its JSON
# log), sends a few requests (a 200, a 404, a 400 and a POST), scrapes the
# admin port and fails on any promtool finding.
set -o errexit -o pipefail -o nounset
cd "$(dirname "$0")/.."

command -v promtool >/dev/null || { echo "promlint.sh: promtool not found (apt-get install prometheus)" >&2; exit 1; }
tmp=$(mktemp -d)
pid=
cleanup() {
  if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/kubeskel" ./cmd/kubeskel
env -i PATH="$PATH" HOME="$tmp" APP_HTTP_ADDR=127.0.0.1:0 APP_ADMIN_ADDR=127.0.0.1:0 \
  APP_PRESTOP_DELAY=0s "$tmp/kubeskel" >"$tmp/log.json" 2>&1 &
pid=$!

# addr SERVER: the address the "listening" record of SERVER names.
addr() {
  jq -r --arg s "$1" 'select(.msg == "listening" and .server == $s) | .addr' "$tmp/log.json" 2>/dev/null | head -n 1
}
http='' admin=''
for _ in $(seq 100); do
  http=$(addr http) admin=$(addr admin)
  [[ -n $http && -n $admin ]] && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/log.json" >&2; echo "promlint.sh: kubeskel exited" >&2; exit 1; }
  sleep 0.1
done
[[ -n $http && -n $admin ]] || { cat "$tmp/log.json" >&2; echo "promlint.sh: no listening addresses in 10s" >&2; exit 1; }

# status METHOD PATH WANT: one request that must answer WANT.
status() {
  local got
  got=$(curl -s -o /dev/null -w '%{http_code}' -X "$1" --max-time 5 "http://$http$2")
  [[ $got == "$3" ]] || { echo "promlint.sh: $1 $2 = $got, want $3" >&2; exit 1; }
}
status GET / 200
status GET /no-such-path 404
status GET '/slow?d=bad' 400
status GET '/slow?d=1ms' 200
status POST /echo 200

curl -sf --max-time 5 "http://$admin/metrics" >"$tmp/metrics.txt"
[[ -s $tmp/metrics.txt ]] || { echo "promlint.sh: empty /metrics" >&2; exit 1; }
if ! promtool check metrics <"$tmp/metrics.txt" >"$tmp/promtool.txt" 2>&1 || [[ -s $tmp/promtool.txt ]]; then
  echo "promlint.sh: promtool check metrics found problems in /metrics:" >&2
  cat "$tmp/promtool.txt" >&2
  exit 1
fi
echo "promlint.sh: promtool check metrics: no findings ($(grep -vc '^#' "$tmp/metrics.txt") samples)"
