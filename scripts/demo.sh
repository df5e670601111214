#!/usr/bin/env bash
# The demo run by `make demo` against the stack started by `tdg dev up`: the catalog, then an
# access request approved with conditions, OPA's decision, a revocation, citizen consent, and
# records streamed in (gRPC and Kafka), stored in Iceberg or dead-lettered, with their indicators,
# then governed queries (gRPC and Arrow Flight) and their audit trail.
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

admin=$($tdg token issue --party platform-ops --org tdg-platform --role platform-admin)
app=$($tdg token issue --party velo-start-app --org velo-start)
portal=$($tdg token issue --party citizen-portal --org tdg-platform --role consent-registrar)
opa_read() {  # OPA's tdg.read decision for the application, as the query service will ask it
  .venv/bin/python scripts/ask_opa_read.py "$1" --party velo-start-app --org velo-start --purpose "$2"
}

step "the platform admin registers a partner and its application"
for spec in "velo-start --kind private-partner --name Vélo-Start --role consumer" \
            "velo-start-app --kind application --organisation velo-start --name Vélo-planner"; do
  # shellcheck disable=SC2086
  TDG_TOKEN=$admin $tdg party register $spec 2>/dev/null || echo "${spec%% *} already registered"
done

step "the application asks for EV charging sessions, for mobility planning"
agreement=$(TDG_TOKEN=$app $tdg access request metropole-lyon.ev-charging-sessions \
  --purpose mobility-planning --legal-basis public-task \
  --justification "Size the public charging network" --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["agreement"]["id"])')
echo "agreement $agreement requested"

step "before approval OPA denies the read"
opa_read metropole-lyon.ev-charging-sessions mobility-planning || true

step "Lyon's data officer approves: user ids hashed, days only, two communes"
$tdg access approve "$agreement" --column session_start --column energy_kwh --column user_id \
  --column commune_code --mask user_id=hash --mask session_start=truncate:day \
  --territory commune_code=69123,69266
sleep 1
step "OPA's decision now (the bundle reached OPA by long polling)"
opa_read metropole-lyon.ev-charging-sessions mobility-planning
step "another purpose is still denied"
opa_read metropole-lyon.ev-charging-sessions research || true

step "revoke; within a second OPA denies again"
$tdg access revoke "$agreement" --reason "demo over"
sleep 1
opa_read metropole-lyon.ev-charging-sessions mobility-planning || true
$tdg access show "$agreement"

step "a citizen gives, then withdraws, consent for energy planning"
TDG_TOKEN=$portal $tdg consent give household-4711 --purpose energy-planning --source portal
TDG_TOKEN=$portal $tdg consent withdraw household-4711 --purpose energy-planning --source portal
TDG_TOKEN=$portal $tdg consent list household-4711

step "the events on tdg.consent.events"
.venv/bin/python scripts/tail_events.py tdg.consent.events --max 20

step "Lyon's counters stream hourly bike counts: JSON lines through the gRPC front door"
TDG_TOKEN=$($tdg token issue --party lyon-data-office --org metropole-lyon --role data-officer)
counts=var/dev/demo-bike-counts.jsonl
.venv/bin/python - "$counts" <<'PY'
import json, sys
with open(sys.argv[1], "w") as out:
    for i in range(5000):
        out.write(json.dumps({"counter_id": f"CPT-{i % 40:03d}", "lane_direction": "forward",
            "date_observed": f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
            "intensity": (i * 7) % 400, "commune_code": "69123"}) + "\n")
    out.write('{"counter_id": "CPT-999", "intensity": "twelve"}\n')
PY
$tdg ingest send metropole-lyon.bike-counters "$counts" || echo "(one record refused at the door, as expected)"

step "a partner system writes to Kafka directly, one record malformed: it is dead-lettered"
.venv/bin/python - <<'PY'
import asyncio, json
from aiokafka import AIOKafkaProducer
async def main():
    p = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9092", acks="all")
    await p.start()
    headers = [("tdg-producer", b"metropole-lyon")]
    for i in range(100):
        await p.send("tdg.ingest.metropole-lyon.bike-counters", headers=headers, value=json.dumps(
            {"counter_id": f"KFK-{i}", "lane_direction": "backward",
             "date_observed": "2026-11-29T08:00:00+01:00", "intensity": i}).encode())
    await p.send_and_wait("tdg.ingest.metropole-lyon.bike-counters", headers=headers,
                          value=b'{"counter_id": "KFK-bad", "date_observed": "2026-11-29 08:00"}')
    await p.stop()
asyncio.run(main())
PY
sleep 3
$tdg ingest status metropole-lyon.bike-counters
$tdg ingest dlq list --dataset metropole-lyon.bike-counters --limit 5
$tdg ingest indicators metropole-lyon.bike-counters --period hour --days 1

step "Lyon's data officer queries its own dataset: everything in clear, aggregated in DuckDB"
sleep 2  # the last micro-batch commits within a second
$tdg query metropole-lyon.bike-counters --purpose mobility-planning \
  --group-by commune_code --agg count --agg sum:intensity --order-by sum_intensity:desc

step "the application asks for bike counts, for mobility planning; Lyon approves with masks"
bikes=$(TDG_TOKEN=$app $tdg access request metropole-lyon.bike-counters \
  --purpose mobility-planning --legal-basis public-task \
  --justification "Plan the cycle network" --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["agreement"]["id"])')
$tdg access approve "$bikes" --column counter_id --column date_observed --column intensity \
  --column commune_code --mask counter_id=hash --mask date_observed=truncate:day \
  --territory commune_code=69123
sleep 1

step "the application's query: counter ids hashed, days only, Lyon's counters only"
TDG_TOKEN=$app $tdg query metropole-lyon.bike-counters --purpose mobility-planning \
  --where "intensity >= 390" --order-by intensity:desc --limit 5

step "filtering on a masked column is refused, with OPA's reason"
TDG_TOKEN=$app $tdg query metropole-lyon.bike-counters --purpose mobility-planning \
  --where "counter_id = 'CPT-001'" || true

step "the same query over Arrow Flight (pyarrow.flight, as any Flight client)"
TDG_TOKEN=$app .venv/bin/python - <<'PY'
import os
import pyarrow.flight as flight
from tdg.query.v1 import query_pb2
client = flight.FlightClient("grpc+tcp://127.0.0.1:50055")
options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {os.environ['TDG_TOKEN']}".encode())])
request = query_pb2.QueryRequest(dataset_id="metropole-lyon.bike-counters", purpose="mobility-planning",
                                 group_by=["commune_code"],
                                 aggregates=[query_pb2.Aggregate(function=query_pb2.AGGREGATE_FUNCTION_SUM, column="intensity")])
info = client.get_flight_info(flight.FlightDescriptor.for_command(request.SerializeToString()), options)
table = client.do_get(info.endpoints[0].ticket, options).read_all()
print(table.to_pylist())
PY

step "every query is audited: the data officer traces the answers back to the agreement"
sleep 2  # the audit table is appended every few seconds
COLUMNS=200 $tdg audit search --dataset metropole-lyon.bike-counters --limit 6

printf '\nThe stack keeps running: .venv/bin/tdg dev status | logs | down\n'
