#!/usr/bin/env bash
# kustomize built from its Go module into .tools/bin/kustomize (TDG_TOOLS_DIR overrides .tools/).
# Skipped when the binary already reports the wanted version. Used by scripts/validate_k8s.py to
# render deploy/k8s/overlays/* offline.
#
# Version: 5.7.1 is the only 5.7.x release the Go module proxy serves; it resolves and builds with
# the machine's Go (1.26) without touching GOTOOLCHAIN. Before moving to 5.8.x, check that it
# builds with that Go too (kustomize/api v0.21.3 already needs Go 1.27).
set -euo pipefail

KUSTOMIZE_VERSION=5.7.1
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools_dir=${TDG_TOOLS_DIR:-$repo_root/.tools}
bin_dir=$tools_dir/bin
kustomize=$bin_dir/kustomize

die() { echo "provision_kustomize: $*" >&2; exit 1; }

# Read the version into a variable first (no `| grep -q` under pipefail: SIGPIPE on early exit).
has_version() { [[ -x $kustomize && $("$kustomize" version 2>/dev/null) == "v$KUSTOMIZE_VERSION" ]]; }

if has_version; then
  echo "kustomize $KUSTOMIZE_VERSION: already provisioned at $kustomize"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "'go' is required (kustomize is built from its Go module) but was not found on PATH"

echo "kustomize $KUSTOMIZE_VERSION: building with go install into $bin_dir (about a minute the first time) ..."
mkdir -p "$bin_dir"
rm -f "$kustomize" # another version (go install refuses to replace a file it did not build)
# CGO off: a static binary that needs no C toolchain.
CGO_ENABLED=0 GOBIN=$bin_dir go install "sigs.k8s.io/kustomize/kustomize/v5@v$KUSTOMIZE_VERSION"
has_version || die "$kustomize does not report version v$KUSTOMIZE_VERSION (got: $("$kustomize" version 2>&1 || true))"
echo "kustomize $KUSTOMIZE_VERSION: $kustomize"
