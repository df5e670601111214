package tdg.write_test

import data.tdg.write

# 2026-03-01T00:00:00Z, the "now" of every test.
now := 1772323200000000000

day := 86400000000000

air_quality := {"id": "metropole-lyon.air-quality", "publisher": "metropole-lyon", "status": "published"}

sensor_co := {"party": "sensor-co", "org": "sensor-co", "roles": []}

# An application of sensor-co writing through its organisation's agreement.
sensor_gateway := {"party": "sensor-gateway", "org": "sensor-co", "roles": []}

lyon_loader := {"party": "lyon-loader", "org": "metropole-lyon", "roles": []}

commitments := {"max_freshness_lag_s": 300, "completeness_pct": 95.0, "validity_rate_pct": 99.0}

write_agreement(consumer, overrides) := object.union(
	{
		"dataset": "metropole-lyon.air-quality",
		"consumer": consumer,
		"kind": "write",
		"state": "active",
		"purposes": [],
		"legal_basis": "contract",
		"salt": "00",
		"columns": [],
		"masks": {},
		"territory_filter": null,
		"aggregate_only": false,
		"min_group_size": 0,
		"valid_from_ns": now - day,
		"valid_until_ns": 0,
		"commitments": commitments,
	},
	overrides,
)

# A bundle holding `agreements` (id -> agreement), indexed as the consent service indexes them.
bundle(agreements) := {
	"revision": 7,
	"settings": {"purposes": ["environment-monitoring"], "default_min_group_size": 10, "default_masks": {}},
	"parties": {
		"sensor-co": {"kind": "private-partner", "organisation": "sensor-co", "status": "active", "roles": ["producer"]},
		"sensor-gateway": {"kind": "application", "organisation": "sensor-co", "status": "active", "roles": ["producer"]},
	},
	"agreements": agreements,
	"index": index_of(agreements),
}

# index[consumer][dataset][kind] = [agreement ids], as the consent service builds it.
index_of(agreements) := {consumer: by_dataset(agreements, consumer) | some a in agreements; consumer := a.consumer}

by_dataset(agreements, consumer) := {dataset: by_kind(agreements, consumer, dataset) |
	some a in agreements
	a.consumer == consumer
	dataset := a.dataset
}

by_kind(agreements, consumer, dataset) := {kind: ids |
	some kind in ["read", "write"]
	ids := [id | some id, a in agreements; a.consumer == consumer; a.dataset == dataset; a.kind == kind]
}

one_agreement := bundle({"agr-w1": write_agreement("sensor-co", {})})

decide(subject, dataset, registry) := d if {
	d := write.decision with input as {"subject": subject, "dataset": dataset}
		with data.tdg.registry as registry
		with time.now_ns as now
}

well_formed(d) if {
	object.keys(d) == {"allow", "reasons", "agreement_id", "commitments"}
	is_boolean(d.allow)
	is_array(d.reasons)
	d.reasons == sort(d.reasons)
	is_string(d.agreement_id)
	is_object(d.commitments)
}

denied(d) if {
	well_formed(d)
	d.allow == false
	count(d.reasons) > 0
	d.agreement_id == ""
	d.commitments == {}
}

#
# Allowed
#

test_contract_example_with_an_agreement if {
	d := decide(sensor_co, air_quality, one_agreement)
	d == {"allow": true, "reasons": [], "agreement_id": "agr-w1", "commitments": commitments}
}

test_organisations_agreement_covers_its_applications if {
	d := decide(sensor_gateway, air_quality, one_agreement)
	d.allow == true
	d.agreement_id == "agr-w1"
}

test_applications_own_agreement if {
	registry := bundle({"agr-w2": write_agreement("sensor-gateway", {})})
	decide(sensor_gateway, air_quality, registry).agreement_id == "agr-w2"
	denied(decide(sensor_co, air_quality, registry))
}

test_publisher_writes_without_agreement if {
	d := decide(lyon_loader, air_quality, {})
	d == {"allow": true, "reasons": [], "agreement_id": "", "commitments": {}}
}

test_publisher_writes_without_bundle if {
	d := write.decision with input as {"subject": lyon_loader, "dataset": air_quality}
	d == {"allow": true, "reasons": [], "agreement_id": "", "commitments": {}}
}

test_publisher_ignores_its_own_agreement if {
	registry := bundle({"agr-w9": write_agreement("metropole-lyon", {})})
	decide(lyon_loader, air_quality, registry).agreement_id == ""
}

test_smallest_usable_id_wins if {
	registry := bundle({
		"agr-b": write_agreement("sensor-co", {"commitments": {"completeness_pct": 50}}),
		"agr-a": write_agreement("sensor-gateway", {}),
		"agr-0": write_agreement("sensor-co", {"state": "suspended"}),
	})
	d := decide(sensor_gateway, air_quality, registry)
	d.agreement_id == "agr-a"
	d.commitments == commitments
}

test_agreement_valid_until_later_and_from_exactly_now if {
	registry := bundle({"agr-w1": write_agreement("sensor-co", {"valid_from_ns": now, "valid_until_ns": now + 1})})
	decide(sensor_co, air_quality, registry).allow == true
}

test_agreement_without_commitments_gives_empty_commitments if {
	registry := bundle({"agr-w1": object.remove(write_agreement("sensor-co", {}), ["commitments"])})
	d := decide(sensor_co, air_quality, registry)
	d.allow == true
	d.commitments == {}
}

#
# The organisation comes from the registry (records from Kafka name only their producer)
#

test_application_without_org_writes_under_its_organisations_agreement if {
	every subject in [{"party": "sensor-gateway"}, {"party": "sensor-gateway", "org": ""}] {
		d := decide(subject, air_quality, one_agreement)
		d == {"allow": true, "reasons": [], "agreement_id": "agr-w1", "commitments": commitments}
	}
}

test_publishers_party_without_org_writes_as_the_publisher if {
	registry := object.union(bundle({}), {"parties": {"lyon-loader": {"kind": "application", "organisation": "metropole-lyon", "status": "active"}}})
	d := decide({"party": "lyon-loader"}, air_quality, registry)
	d == {"allow": true, "reasons": [], "agreement_id": "", "commitments": {}}
}

test_spoofed_org_does_not_make_a_partner_the_publisher if {
	spoofed := {"party": "sensor-gateway", "org": "metropole-lyon", "roles": []}
	d := decide(spoofed, air_quality, bundle({}))
	denied(d)
	d.reasons == ["no write agreement for dataset 'metropole-lyon.air-quality' held by 'sensor-co' or 'sensor-gateway'"]
}

test_spoofed_org_still_writes_under_the_registered_organisations_agreement if {
	spoofed := {"party": "sensor-gateway", "org": "other-co", "roles": []}
	registry := bundle({
		"agr-w1": write_agreement("sensor-co", {}),
		"agr-0": write_agreement("other-co", {}),
	})
	decide(spoofed, air_quality, registry).agreement_id == "agr-w1"
}

test_spoofed_org_does_not_escape_the_organisations_suspension if {
	registry := object.union(one_agreement, {"parties": {"sensor-co": {"status": "suspended"}}})
	d := decide({"party": "sensor-gateway", "org": "other-co"}, air_quality, registry)
	d.reasons == ["party 'sensor-co' is suspended"]
}

test_party_listed_without_organisation_has_none if {
	# the registry knows the party: the org given beside it is still not believed
	registry := object.union(bundle({}), {"parties": {"loose-app": {"kind": "application", "status": "active"}}})
	d := decide({"party": "loose-app", "org": "metropole-lyon"}, air_quality, registry)
	d.reasons == ["no write agreement for dataset 'metropole-lyon.air-quality' held by 'loose-app'"]
}

test_unknown_party_without_org_has_only_its_own_agreements if {
	rogue := {"party": "rogue-app"}
	d := decide(rogue, air_quality, one_agreement)
	denied(d)
	d.reasons == ["no write agreement for dataset 'metropole-lyon.air-quality' held by 'rogue-app'"]
	own := bundle({"agr-w1": write_agreement("sensor-co", {}), "agr-w7": write_agreement("rogue-app", {})})
	decide(rogue, air_quality, own).agreement_id == "agr-w7"
}

test_unknown_party_keeps_the_org_of_its_token if {
	# the gRPC path: the organisation comes from a verified token, and the registry lacks the party
	d := decide({"party": "sensor-bridge", "org": "sensor-co"}, air_quality, one_agreement)
	d.agreement_id == "agr-w1"
}

#
# Denied
#

test_no_agreement if {
	d := decide(sensor_co, air_quality, bundle({}))
	denied(d)
	d.reasons == ["no write agreement for dataset 'metropole-lyon.air-quality' held by 'sensor-co'"]
}

test_no_agreement_names_party_and_org if {
	d := decide(sensor_gateway, air_quality, bundle({}))
	d.reasons == ["no write agreement for dataset 'metropole-lyon.air-quality' held by 'sensor-co' or 'sensor-gateway'"]
}

test_without_bundle_non_publisher_is_denied if {
	d := write.decision with input as {"subject": sensor_co, "dataset": air_quality}
	denied(d)
	d.reasons == ["no write agreement for dataset 'metropole-lyon.air-quality' held by 'sensor-co'"]
}

test_read_agreement_does_not_allow_writing if {
	registry := bundle({"agr-r1": write_agreement("sensor-co", {"kind": "read"})})
	d := decide(sensor_co, air_quality, registry)
	d.reasons == ["no write agreement for dataset 'metropole-lyon.air-quality' held by 'sensor-co'"]
}

test_agreement_on_another_dataset_does_not_count if {
	registry := bundle({"agr-w1": write_agreement("sensor-co", {"dataset": "metropole-lyon.noise"})})
	denied(decide(sensor_co, air_quality, registry))
}

test_index_entry_disagreeing_with_the_agreement_is_ignored if {
	# the index says sensor-co, the agreement says someone else
	registry := object.union(one_agreement, {"agreements": {"agr-w1": write_agreement("other-co", {})}})
	d := decide(sensor_co, air_quality, registry)
	d.reasons == ["no write agreement for dataset 'metropole-lyon.air-quality' held by 'sensor-co'"]
}

test_suspended_agreement if {
	registry := bundle({"agr-w1": write_agreement("sensor-co", {"state": "suspended"})})
	d := decide(sensor_co, air_quality, registry)
	denied(d)
	d.reasons == ["agreement 'agr-w1' is suspended"]
}

test_agreement_not_yet_valid if {
	registry := bundle({"agr-w1": write_agreement("sensor-co", {"valid_from_ns": now + day})})
	d := decide(sensor_co, air_quality, registry)
	denied(d)
	d.reasons == ["agreement 'agr-w1' is not valid until 2026-03-02T00:00:00Z"]
}

test_agreement_expired if {
	registry := bundle({"agr-w1": write_agreement("sensor-co", {"valid_until_ns": now})})
	d := decide(sensor_co, air_quality, registry)
	denied(d)
	d.reasons == ["agreement 'agr-w1' expired at 2026-03-01T00:00:00Z"]
}

test_agreement_valid_later_by_the_clock if {
	# the same agreement, asked at two instants
	registry := bundle({"agr-w1": write_agreement("sensor-co", {"valid_from_ns": now + day, "valid_until_ns": now + (2 * day)})})
	request := {"subject": sensor_co, "dataset": air_quality}
	not write.decision.allow with input as request with data.tdg.registry as registry with time.now_ns as now
	write.decision.allow with input as request with data.tdg.registry as registry with time.now_ns as now + day
	not write.decision.allow with input as request with data.tdg.registry as registry with time.now_ns as now + (2 * day)
}

test_malformed_validity_is_not_usable if {
	registry := bundle({"agr-w1": write_agreement("sensor-co", {"valid_until_ns": "never"})})
	d := decide(sensor_co, air_quality, registry)
	d.reasons == ["agreement 'agr-w1' has a malformed validity period"]
}

test_every_unusable_agreement_is_reasoned if {
	registry := bundle({
		"agr-1": write_agreement("sensor-co", {"state": "suspended"}),
		"agr-2": write_agreement("sensor-gateway", {"valid_until_ns": now - 1}),
	})
	d := decide(sensor_gateway, air_quality, registry)
	d.reasons == ["agreement 'agr-1' is suspended", "agreement 'agr-2' expired at 2026-02-28T23:59:59.999999999Z"]
}

test_suspended_party if {
	registry := object.union(one_agreement, {"parties": {"sensor-co": {"status": "suspended"}}})
	d := decide(sensor_co, air_quality, registry)
	denied(d)
	d.reasons == ["party 'sensor-co' is suspended"]
}

test_suspended_org_blocks_its_application if {
	registry := object.union(one_agreement, {"parties": {"sensor-co": {"status": "suspended"}}})
	d := decide(sensor_gateway, air_quality, registry)
	d.reasons == ["party 'sensor-co' is suspended"]
}

test_suspended_publisher_cannot_write if {
	registry := object.union(bundle({}), {"parties": {"metropole-lyon": {"status": "suspended"}}})
	d := decide(lyon_loader, air_quality, registry)
	d.reasons == ["party 'metropole-lyon' is suspended"]
}

test_draft_dataset if {
	d := decide(sensor_co, object.union(air_quality, {"status": "draft"}), one_agreement)
	denied(d)
	d.reasons == ["dataset 'metropole-lyon.air-quality' is not published (status 'draft')"]
	decide(lyon_loader, object.union(air_quality, {"status": "draft"}), {}).allow == false
}

test_deprecated_dataset if {
	d := decide(lyon_loader, object.union(air_quality, {"status": "deprecated"}), one_agreement)
	denied(d)
	d.reasons == ["dataset 'metropole-lyon.air-quality' is deprecated"]
}

test_missing_status if {
	d := decide(sensor_co, object.remove(air_quality, ["status"]), one_agreement)
	d.reasons == ["dataset 'metropole-lyon.air-quality' is not published (status '')"]
}

test_unauthenticated if {
	d := decide({"party": "", "org": "metropole-lyon"}, air_quality, one_agreement)
	denied(d)
	d.reasons == ["unauthenticated caller"]
	decide({"org": "sensor-co"}, air_quality, one_agreement).reasons == ["unauthenticated caller"]
}

test_publisher_match_needs_a_publisher if {
	d := decide({"party": "p", "org": ""}, object.union(air_quality, {"publisher": ""}), {})
	d.allow == false
}

test_no_dataset_named if {
	d := decide(sensor_co, {"publisher": "metropole-lyon", "status": "published"}, one_agreement)
	denied(d)
	"the request names no dataset" in d.reasons
}

test_empty_input_is_a_deny_object if {
	d := write.decision with input as {}
	denied(d)
	d.reasons == [
		"dataset '' is not published (status '')",
		"the request names no dataset",
		"unauthenticated caller",
	]
}

test_subject_without_org_and_dataset_without_publisher if {
	d := decide({"party": "sensor-co"}, object.remove(air_quality, ["publisher"]), one_agreement)
	d.allow == true
	d.agreement_id == "agr-w1"
}

test_refusal_without_a_specific_problem_still_has_a_reason if {
	d := write.decision with input as {"subject": sensor_co, "dataset": air_quality}
		with data.tdg.registry as one_agreement
		with time.now_ns as now
		with write.permitted as false
	d.reasons == ["write refused"]
	denied(d)
}
