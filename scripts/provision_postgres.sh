#!/usr/bin/env bash
# PostgreSQL server binaries for the store tests and `TDG_*_DATABASE_URL=postgresql+asyncpg://…`.
# Uses what the machine has (PATH, then the Debian layout /usr/lib/postgresql/<major>/bin); otherwise
# installs the Debian package (CI runs as root). Prints the directory holding initdb and pg_ctl.
# Nothing is downloaded into .tools/: the server comes from the system package manager.
set -euo pipefail

die() { echo "provision_postgres: $*" >&2; exit 1; }

find_bindir() {
  local d
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    # Resolve symlinks (/usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb): the caller
    # wants the directory that also holds postgres and pg_isready.
    dirname "$(readlink -f "$(command -v initdb)")"
    return 0
  fi
  # Newest major first.
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do
    if [[ -x $d/initdb && -x $d/pg_ctl ]]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

if ! bindir=$(find_bindir); then
  command -v apt-get >/dev/null 2>&1 \
    || die "no initdb/pg_ctl found and 'apt-get' is not available: install the PostgreSQL server binaries"
  [[ $(id -u) -eq 0 ]] \
    || die "no initdb/pg_ctl found: run as root (or: sudo apt-get install -y postgresql)"
  echo "PostgreSQL: installing the Debian package ..."
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql
  bindir=$(find_bindir) || die "the postgresql package is installed but initdb/pg_ctl were not found"
fi

echo "PostgreSQL: $("$bindir/postgres" --version) in $bindir"
