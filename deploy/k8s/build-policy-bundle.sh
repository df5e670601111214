#!/usr/bin/env bash
# Build the OPA sidecars' policy bundle from policies/ (usually through `make policy-bundle`).
#
#   deploy/k8s/build-policy-bundle.sh [OUTPUT]      default OUTPUT: var/policies.tar.gz
#   env: OPA (default .tools/bin/opa), REVISION (default: the commit, else "dev")
#
# The bundle declares the roots of deploy/k8s/policy-bundle.manifest.json, so that it does not
# overlap the consent service's registry bundle (root tdg/registry), which OPA refuses to activate
# beside a bundle that claims everything (`opa build` alone writes roots [""]). policies/ holds no
# .manifest of its own: the tree is staged with one. `opa build` also compiles the policies, and
# fails on a package outside those roots: add its root to the manifest then.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
opa="${OPA:-$repo/.tools/bin/opa}"
out="${1:-$repo/var/policies.tar.gz}"
revision="${REVISION:-$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo dev)}"

[[ -x "$opa" ]] || { echo "build-policy-bundle: no OPA at $opa (run make opa)" >&2; exit 2; }
# Absolute paths: the build runs from the stage directory.
case "$opa" in /*) ;; *) opa="$PWD/$opa" ;; esac
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp -R "$repo/policies/." "$stage/"
cp "$here/policy-bundle.manifest.json" "$stage/.manifest"
mkdir -p "$(dirname "$out")"
# From inside the stage, so the files in the bundle are /tdg/..., not the stage's temporary path.
(cd "$stage" && "$opa" build --bundle . --ignore '*_test.rego' --ignore '*.md' \
  --revision "$revision" -o "$out")
echo "policy bundle: $out (revision $revision, roots $(tr -d ' \n' < "$here/policy-bundle.manifest.json"))"
