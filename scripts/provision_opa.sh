#!/usr/bin/env bash
# Open Policy Agent built from its Go module into .tools/bin/opa (TDG_TOOLS_DIR overrides .tools/).
# Skipped when the binary already reports the wanted version; the Go module and build caches make
# a rebuild after a version bump much faster than the first build (which takes minutes).
set -euo pipefail

OPA_VERSION=1.22.3
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools_dir=${TDG_TOOLS_DIR:-$repo_root/.tools}
bin_dir=$tools_dir/bin
opa=$bin_dir/opa

die() { echo "provision_opa: $*" >&2; exit 1; }

# The version is read into a variable first: `opa version | grep -q` under pipefail fails when
# grep exits early and opa gets SIGPIPE.
has_version() { [[ -x $opa && $'\n'$("$opa" version 2>/dev/null)$'\n' == *$'\n'"Version: $OPA_VERSION"$'\n'* ]]; }

if has_version; then
  echo "OPA $OPA_VERSION: already provisioned at $opa"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "'go' is required (OPA is built from its Go module) but was not found on PATH"

echo "OPA $OPA_VERSION: building with go install into $bin_dir (the first build takes a few minutes) ..."
mkdir -p "$bin_dir"
# CGO off: a static binary that needs no C toolchain; it only loses the (unused) Wasm runtime.
CGO_ENABLED=0 GOBIN=$bin_dir go install "github.com/open-policy-agent/opa@v$OPA_VERSION"
has_version || die "$opa does not report version $OPA_VERSION"
echo "OPA $OPA_VERSION: $opa"
