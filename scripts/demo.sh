#!/usr/bin/env bash
# The catalog demo run by `make demo`, against the stack started by `tdg dev up`.
set -euo pipefail
cd "$(dirname "$0")/.."
tdg=.venv/bin/tdg
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

export TDG_TOKEN
TDG_TOKEN=$($tdg token issue --party lyon-data-office --org metropole-lyon --role data-officer)
reader=$($tdg token issue --party velo-start-app --org velo-start --role application)

for f in bike-counters ev-charging-sessions household-energy-meters waste-bin-fill-levels; do
  id=$(grep -m1 '^id:' "examples/$f.yaml" | awk '{print $2}')
  step "register $id (draft)"
  if ! $tdg catalog get "$id" >/dev/null 2>&1; then
    $tdg catalog register "examples/$f.yaml"
  else
    echo "already registered"
  fi
done

step "evolve the bike counters' schema (a nullable column added)"
$tdg catalog evolve metropole-lyon.bike-counters examples/evolutions/bike-counters-v2.yaml || true

step "an incompatible change is refused, each problem listed"
$tdg catalog evolve metropole-lyon.bike-counters examples/ev-charging-sessions.yaml || true

step "publish"
for id in metropole-lyon.bike-counters metropole-lyon.ev-charging-sessions metropole-lyon.waste-bin-fill-levels; do
  $tdg catalog publish "$id" >/dev/null 2>&1 && echo "published $id" || echo "$id already published"
done

step "search as an application: 'energie' finds 'Énergie'"
TDG_TOKEN=$reader $tdg catalog search energie
TDG_TOKEN=$reader $tdg catalog search "velo comptage"

step "a draft is invisible to another organisation"
TDG_TOKEN=$reader $tdg catalog get metropole-lyon.household-energy-meters || true

step "an application may not publish"
TDG_TOKEN=$reader $tdg catalog publish metropole-lyon.household-energy-meters || true

step "DCAT-AP export of the published datasets"
$tdg catalog export-dcat -o var/dev/catalog.dcat.jsonld
head -c 600 var/dev/catalog.dcat.jsonld; echo " …"

step "the events on tdg.catalog.events"
.venv/bin/python scripts/tail_events.py tdg.catalog.events --max 20

printf '\nThe stack keeps running: .venv/bin/tdg dev status | logs | down\n'
