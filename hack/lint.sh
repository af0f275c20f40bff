#!/usr/bin/env bash
# lint.sh is `make lint`: golangci-lint (.golangci.yml, with the e2e, bench
# and kube build tags) on the main module and on test/deploy, shellcheck on
# every shell script under hack/ and .ci/, and promtool on a real /metrics
# scrape (hack/promlint.sh). It runs all three and fails if any failed.
set -o errexit -o pipefail -o nounset
cd "$(dirname "$0")/.."

GOLANGCI_LINT=$(hack/tools.sh golangci-lint)
failed=()

echo "== golangci-lint (main module)"
"$GOLANGCI_LINT" run ./... || failed+=("golangci-lint main module")
echo "== golangci-lint (test/deploy)"
(cd test/deploy && "$GOLANGCI_LINT" run --config ../../.golangci.yml ./...) || failed+=("golangci-lint test/deploy")

echo "== shellcheck"
command -v shellcheck >/dev/null || { echo "lint.sh: shellcheck not found (apt-get install shellcheck)" >&2; exit 1; }
# Every file under hack/ and .ci/ that starts with a shell shebang.
scripts=()
while IFS= read -r f; do
  head -n 1 "$f" | grep -qE '^#!.*(ba)?sh' && scripts+=("$f")
done < <(find hack .ci -type f | sort)
# -x follows the `source` lines (hack/kube-lib.sh).
shellcheck -x "${scripts[@]}" || failed+=("shellcheck")
echo "shellcheck: ${#scripts[@]} scripts"

echo "== promtool check metrics"
hack/promlint.sh || failed+=("promtool")

if ((${#failed[@]})); then
  echo "lint.sh: failed: ${failed[*]}" >&2
  exit 1
fi
echo "lint.sh: all clean"
