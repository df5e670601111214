package tdg.read_test

import data.tdg.read

#
# Fixtures
#

# 2026-03-01T00:00:00Z, the "now" of every test.
now := 1772323200000000000

day := 86400000000000

salt := "5f1c0000000000000000000000000000000000000000000000000000000000aa"

velo_app := {"party": "velo-app", "org": "velo-startup", "roles": []}

# Another application of the same organisation.
velo_web := {"party": "velo-web", "org": "velo-startup", "roles": []}

lyon_analyst := {"party": "lyon-analyst", "org": "metropole-lyon", "roles": []}

dataset_id := "metropole-lyon.bike-counters"

bike_counters := {
	"id": dataset_id,
	"publisher": "metropole-lyon",
	"status": "published",
	"access_level": "restricted",
	"territory": ["200046977"],
	"subject_column": "",
	"event_time_column": "ts",
	"columns": [
		{"name": "counter_id", "type": "string", "sensitivity": "public"},
		{"name": "commune", "type": "string", "sensitivity": "public"},
		{"name": "count", "type": "int64", "sensitivity": "public"},
		{"name": "ts", "type": "timestamp", "sensitivity": "public"},
		{"name": "notes", "type": "string", "sensitivity": "internal"},
		{"name": "owner_email", "type": "string", "sensitivity": "personal"},
		{"name": "health_flag", "type": "bool", "sensitivity": "sensitive"},
	],
}

column_names := {c.name | some c in bike_counters.columns}

with_dataset(overrides) := object.union(bike_counters, overrides)

open_dataset := with_dataset({"access_level": "open"})

settings := {
	"purposes": ["public-statistics", "mobility-planning", "research"],
	"default_min_group_size": 10,
	"default_masks": {"personal": "hash", "sensitive": "null"},
}

parties := {
	"velo-app": {"kind": "application", "organisation": "velo-startup", "status": "active", "roles": ["consumer"]},
	"velo-web": {"kind": "application", "organisation": "velo-startup", "status": "active", "roles": ["consumer"]},
	"velo-startup": {"kind": "private-partner", "organisation": "velo-startup", "status": "active", "roles": ["consumer"]},
	"metropole-lyon": {"kind": "intercommunality", "organisation": "metropole-lyon", "status": "active", "roles": ["producer"]},
}

# A read agreement of `consumer` on bike-counters, active since yesterday, no end.
agreement(consumer, overrides) := object.union(
	{
		"dataset": dataset_id,
		"consumer": consumer,
		"kind": "read",
		"state": "active",
		"purposes": ["mobility-planning"],
		"legal_basis": "public-task",
		"salt": salt,
		"columns": [],
		"masks": {},
		"territory_filter": null,
		"aggregate_only": false,
		"min_group_size": 0,
		"valid_from_ns": now - day,
		"valid_until_ns": 0,
		"commitments": {},
	},
	overrides,
)

# A bundle holding `agreements` (id -> agreement), indexed as the consent service indexes them.
bundle(agreements) := {
	"revision": 42,
	"settings": settings,
	"parties": parties,
	"agreements": agreements,
	"index": index_of(agreements),
}

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

# velo-app's single agreement agr-1, with `overrides`.
one(overrides) := bundle({"agr-1": agreement("velo-app", overrides)})

# The bundle with some settings replaced.
with_settings(registry, overrides) := object.union(
	object.remove(registry, ["settings"]),
	{"settings": object.union(object.remove(settings, object.keys(overrides)), overrides)},
)

with_party_status(registry, id, status) := object.union(registry, {"parties": {id: {"status": status}}})

request(overrides) := object.union(
	{
		"purpose": "mobility-planning",
		"columns": [],
		"filter_columns": [],
		"group_by": [],
		"aggregates": [],
		"order_by": [],
	},
	overrides,
)

plain := request({})

decide(subject, dataset, req, registry) := d if {
	d := read.decision with input as {"subject": subject, "dataset": dataset, "request": req}
		with data.tdg.registry as registry
		with time.now_ns as now
}

# Without any bundle (data.tdg.registry absent).
decide_without_bundle(subject, dataset, req) := d if {
	d := read.decision with input as {"subject": subject, "dataset": dataset, "request": req}
		with time.now_ns as now
}

well_formed(d) if {
	object.keys(d) == {
		"allow", "reasons", "agreement_id", "purpose", "columns", "row_filters",
		"consent", "aggregate_only", "min_group_size",
	}
	is_boolean(d.allow)
	is_array(d.reasons)
	d.reasons == sort(d.reasons)
	is_string(d.agreement_id)
	is_string(d.purpose)
	is_object(d.columns)
	is_array(d.row_filters)
	object.keys(d.consent) == {"required", "purpose", "subject_column"}
	is_boolean(d.aggregate_only)
	is_number(d.min_group_size)
	every _, t in d.columns {
		t.treatment in {"clear", "null", "hash", "generalise", "deny"}
		object.keys(t) == treatment_keys[t.treatment]
	}
}

# `salt` only with hash, `generalise` only with generalise.
treatment_keys := {
	"clear": {"treatment"},
	"null": {"treatment"},
	"deny": {"treatment"},
	"hash": {"treatment", "salt"},
	"generalise": {"treatment", "generalise"},
}

allowed(d) if {
	well_formed(d)
	d.allow == true
	d.reasons == []
}

# A deny grants nothing.
denied(d) if {
	well_formed(d)
	d.allow == false
	count(d.reasons) > 0
	d.agreement_id == ""
	every _, t in d.columns {
		t == {"treatment": "deny"}
	}
	d.row_filters == []
	d.consent == {"required": false, "purpose": "", "subject_column": ""}
	d.aggregate_only == false
	d.min_group_size == 0
}

denied_because(d, reason) if {
	denied(d)
	reason in d.reasons
}

clear := {"treatment": "clear"}

nulled := {"treatment": "null"}

deny := {"treatment": "deny"}

hashed := {"treatment": "hash", "salt": salt}

#
# The contract's example
#

test_contract_example if {
	registry := one({
		"columns": ["counter_id", "commune", "count", "ts"],
		"masks": {
			"counter_id": {"method": "hash"},
			"ts": {"method": "generalise", "generalise": {"truncate_to": "day"}},
			"commune": {"method": "generalise", "generalise": {"commune_to_epci": true}},
			"age": {"method": "clear"},
		},
		"territory_filter": {"column": "commune", "codes": ["69123", "69266"]},
	})
	req := request({
		"columns": ["counter_id", "count"],
		"filter_columns": ["count"],
		"aggregates": [{"function": "sum", "column": "count"}],
	})
	d := decide(velo_app, bike_counters, req, registry)
	d == {
		"allow": true,
		"reasons": [],
		"agreement_id": "agr-1",
		"purpose": "mobility-planning",
		"columns": {
			"counter_id": hashed,
			"commune": {"treatment": "generalise", "generalise": {"commune_to_epci": true}},
			"count": clear,
			"ts": {"treatment": "generalise", "generalise": {"truncate_to": "day"}},
			"notes": deny,
			"owner_email": deny,
			"health_flag": deny,
		},
		"row_filters": [{"column": "commune", "op": "in", "values": ["69123", "69266"]}],
		"consent": {"required": false, "purpose": "", "subject_column": ""},
		"aggregate_only": false,
		"min_group_size": 0,
	}
	well_formed(d)
}

test_every_dataset_column_has_an_entry if {
	every registry in [one({}), one({"columns": ["count"]}), bundle({})] {
		every dataset in [bike_counters, open_dataset] {
			object.keys(decide(velo_app, dataset, plain, registry).columns) == column_names
		}
	}
}

#
# Treatments under an agreement
#

test_explicit_masks if {
	registry := one({"masks": {
		"counter_id": {"method": "hash"},
		"commune": {"method": "null"},
		"ts": {"method": "generalise", "generalise": {"truncate_to": "hour"}},
		"owner_email": {"method": "clear"},
		"health_flag": {"method": "hash"},
	}})
	d := decide(velo_app, bike_counters, plain, registry)
	allowed(d)
	d.columns.counter_id == hashed
	d.columns.commune == nulled
	d.columns.ts == {"treatment": "generalise", "generalise": {"truncate_to": "hour"}}
	d.columns.owner_email == clear
	d.columns.health_flag == hashed
}

test_hash_takes_the_agreements_salt if {
	d := decide(velo_app, bike_counters, plain, one({"salt": "abc", "masks": {"count": {"method": "hash"}}}))
	d.columns.count == {"treatment": "hash", "salt": "abc"}
}

test_default_masks_per_sensitivity if {
	d := decide(velo_app, bike_counters, plain, one({}))
	allowed(d)
	d.columns.owner_email == hashed
	d.columns.health_flag == nulled
	d.columns.notes == clear
	d.columns.counter_id == clear
}

test_other_default_masks if {
	registry := with_settings(one({}), {"default_masks": {"personal": "clear", "sensitive": "hash"}})
	d := decide(velo_app, bike_counters, plain, registry)
	d.columns.owner_email == clear
	d.columns.health_flag == hashed
}

test_missing_default_masks_null_the_column if {
	registry := with_settings(one({}), {"default_masks": {}})
	d := decide(velo_app, bike_counters, plain, registry)
	d.columns.owner_email == nulled
	d.columns.health_flag == nulled
}

test_default_generalise_without_parameters_denies if {
	registry := with_settings(one({}), {"default_masks": {"personal": "generalise", "sensitive": "shuffle"}})
	d := decide(velo_app, bike_counters, plain, registry)
	d.columns.owner_email == deny
	d.columns.health_flag == deny
}

test_unknown_sensitivity_counts_as_sensitive if {
	dataset := with_dataset({"columns": [
		{"name": "a", "type": "string", "sensitivity": "secret"},
		{"name": "b", "type": "string"},
	]})
	d := decide(velo_app, dataset, plain, one({}))
	d.columns == {"a": nulled, "b": nulled}
	o := decide(velo_app, object.union(dataset, {"access_level": "open"}), plain, bundle({}))
	o.columns == {"a": nulled, "b": nulled}
}

test_columns_not_granted_are_denied if {
	d := decide(velo_app, bike_counters, plain, one({"columns": ["count", "ts", "owner_email"]}))
	allowed(d)
	d.columns == {
		"counter_id": deny, "commune": deny, "count": clear, "ts": clear,
		"notes": deny, "owner_email": hashed, "health_flag": deny,
	}
}

test_a_mask_does_not_grant_a_column if {
	d := decide(velo_app, bike_counters, plain, one({"columns": ["count"], "masks": {"ts": {"method": "clear"}}}))
	d.columns.ts == deny
}

test_empty_columns_grant_every_column if {
	d := decide(velo_app, bike_counters, plain, one({"columns": []}))
	every name in column_names {
		d.columns[name] != deny
	}
}

test_missing_or_malformed_columns_grant_none if {
	every registry in [
		bundle({"agr-1": object.remove(agreement("velo-app", {}), ["columns"])}),
		one({"columns": "all"}),
	] {
		d := decide(velo_app, bike_counters, plain, registry)
		every _, t in d.columns {
			t == deny
		}
	}
}

test_malformed_masks_deny_the_column if {
	registry := one({"masks": {
		"counter_id": {"method": "shuffle"},
		"commune": {"method": "generalise"},
		"ts": {"method": "generalise", "generalise": {}},
		"count": {},
	}})
	d := decide(velo_app, bike_counters, plain, registry)
	d.columns.counter_id == deny
	d.columns.commune == deny
	d.columns.ts == deny
	d.columns.count == deny
}

test_hash_without_salt_denies if {
	every registry in [one({"salt": "", "masks": {"count": {"method": "hash"}}}), one({"salt": null, "masks": {"count": {"method": "hash"}}})] {
		d := decide(velo_app, bike_counters, plain, registry)
		d.columns.count == deny
		d.columns.owner_email == deny
	}
}

#
# Territory row filter
#

test_territory_filter_becomes_a_row_filter if {
	registry := one({"territory_filter": {"column": "commune", "codes": ["69123"]}})
	d := decide(velo_app, bike_counters, plain, registry)
	d.row_filters == [{"column": "commune", "op": "in", "values": ["69123"]}]
}

test_no_territory_filter_no_row_filter if {
	decide(velo_app, bike_counters, plain, one({})).row_filters == []
	decide(velo_app, bike_counters, plain, bundle({"agr-1": object.remove(agreement("velo-app", {}), ["territory_filter"])})).row_filters == []
}

test_malformed_territory_filter_denies if {
	every filter in [{"column": "commune"}, {"codes": ["69123"]}, {"column": "", "codes": []}, "commune", false] {
		d := decide(velo_app, bike_counters, plain, one({"territory_filter": filter}))
		denied_because(d, "agreement 'agr-1' has a malformed territory filter")
	}
}

test_territory_filter_on_an_unknown_column_denies if {
	d := decide(velo_app, bike_counters, plain, one({"territory_filter": {"column": "insee", "codes": ["69123"]}}))
	denied_because(d, "territory filter column 'insee' of agreement 'agr-1' is not a column of dataset 'metropole-lyon.bike-counters'")
}

#
# Aggregate-only
#

aggregate_request := request({
	"columns": ["commune", "count"],
	"group_by": ["commune"],
	"aggregates": [{"function": "sum", "column": "count"}],
})

test_aggregate_only_with_default_group_size if {
	d := decide(velo_app, bike_counters, aggregate_request, one({"aggregate_only": true}))
	allowed(d)
	d.aggregate_only == true
	d.min_group_size == 10
}

test_aggregate_only_with_explicit_group_size if {
	d := decide(velo_app, bike_counters, aggregate_request, one({"aggregate_only": true, "min_group_size": 25}))
	allowed(d)
	d.min_group_size == 25
}

test_aggregate_only_default_from_the_settings if {
	registry := with_settings(one({"aggregate_only": true}), {"default_min_group_size": 5})
	decide(velo_app, bike_counters, aggregate_request, registry).min_group_size == 5
}

test_aggregate_only_without_usable_default_falls_back_to_10 if {
	every value in [0, null, "ten"] {
		registry := with_settings(one({"aggregate_only": true}), {"default_min_group_size": value})
		decide(velo_app, bike_counters, aggregate_request, registry).min_group_size == 10
	}
}

test_group_size_is_zero_without_aggregate_only if {
	d := decide(velo_app, bike_counters, plain, one({"min_group_size": 25}))
	d.aggregate_only == false
	d.min_group_size == 0
}

test_aggregate_only_needs_an_aggregate if {
	d := decide(velo_app, bike_counters, request({"columns": ["count"]}), one({"aggregate_only": true}))
	denied_because(d, "access to dataset 'metropole-lyon.bike-counters' is aggregate-only: the request must aggregate")
}

test_aggregate_only_refuses_a_column_neither_grouped_nor_aggregated if {
	req := object.union(aggregate_request, {"columns": ["commune", "count", "ts"]})
	d := decide(velo_app, bike_counters, req, one({"aggregate_only": true}))
	d.reasons == ["column 'ts' is neither grouped nor aggregated, and access to dataset 'metropole-lyon.bike-counters' is aggregate-only"]
	denied(d)
}

test_aggregate_only_count_star_by_group if {
	req := request({"columns": ["commune"], "group_by": ["commune"], "aggregates": [{"function": "COUNT", "column": "*"}]})
	allowed(decide(velo_app, bike_counters, req, one({"aggregate_only": true})))
	no_columns := request({"group_by": ["commune"], "aggregates": [{"function": "count", "column": ""}]})
	allowed(decide(velo_app, bike_counters, no_columns, one({"aggregate_only": true})))
}

#
# Consent
#

consent_dataset := with_dataset({
	"subject_column": "citizen_id",
	"columns": array.concat(bike_counters.columns, [{"name": "citizen_id", "type": "string", "sensitivity": "personal"}]),
})

test_consent_required_with_purpose_and_subject_column if {
	d := decide(velo_app, consent_dataset, plain, one({"legal_basis": "consent"}))
	allowed(d)
	d.consent == {"required": true, "purpose": "mobility-planning", "subject_column": "citizen_id"}
}

test_consent_not_required_for_other_legal_bases if {
	every basis in ["public-task", "contract", "legitimate-interest"] {
		decide(velo_app, consent_dataset, plain, one({"legal_basis": basis})).consent.required == false
	}
}

test_consent_without_subject_column_denies if {
	d := decide(velo_app, bike_counters, plain, one({"legal_basis": "consent"}))
	d.reasons == ["agreement 'agr-1' rests on consent, but dataset 'metropole-lyon.bike-counters' names no subject column"]
	denied(d)
}

test_consent_subject_column_must_exist if {
	d := decide(velo_app, with_dataset({"subject_column": "nobody"}), plain, one({"legal_basis": "consent"}))
	denied_because(d, "subject column 'nobody' is not a column of dataset 'metropole-lyon.bike-counters'")
}

#
# Purpose
#

test_purpose_required if {
	every req in [request({"purpose": ""}), object.remove(plain, ["purpose"]), request({"purpose": 7})] {
		d := decide(velo_app, bike_counters, req, one({}))
		denied_because(d, "the request names no purpose")
	}
}

test_unknown_purpose if {
	d := decide(velo_app, bike_counters, request({"purpose": "marketing"}), one({"purposes": ["marketing"]}))
	d.reasons == ["purpose 'marketing' is not a known purpose"]
	denied(d)
}

test_purpose_not_in_the_agreement if {
	d := decide(velo_app, bike_counters, request({"purpose": "research"}), one({"purposes": ["mobility-planning", "public-statistics"]}))
	denied(d)
	d.reasons == [
		"dataset 'metropole-lyon.bike-counters' is restricted: reading it requires an agreement",
		"purpose 'research' is not among the purposes of agreement 'agr-1' (mobility-planning, public-statistics)",
	]
	d.purpose == "research"
}

test_agreement_covering_the_purpose_is_chosen if {
	registry := bundle({
		"agr-1": agreement("velo-app", {"purposes": ["research"]}),
		"agr-2": agreement("velo-app", {"purposes": ["mobility-planning"], "columns": ["count"]}),
	})
	decide(velo_app, bike_counters, plain, registry).agreement_id == "agr-2"
	decide(velo_app, bike_counters, request({"purpose": "research"}), registry).agreement_id == "agr-1"
}

test_smallest_usable_id_wins if {
	registry := bundle({
		"agr-c": agreement("velo-app", {}),
		"agr-b": agreement("velo-startup", {"columns": ["count"]}),
		"agr-a": agreement("velo-app", {"state": "suspended"}),
	})
	d := decide(velo_app, bike_counters, plain, registry)
	d.agreement_id == "agr-b"
	d.columns.ts == deny
}

#
# Agreements: who holds them, their state and validity
#

test_organisations_agreement_covers_its_applications if {
	registry := bundle({"agr-org": agreement("velo-startup", {})})
	allowed(decide(velo_app, bike_counters, plain, registry))
	decide(velo_web, bike_counters, plain, registry).agreement_id == "agr-org"
}

test_an_applications_agreement_does_not_cover_its_sibling if {
	d := decide(velo_web, bike_counters, plain, one({}))
	denied_because(d, "no read agreement for dataset 'metropole-lyon.bike-counters' held by 'velo-startup' or 'velo-web'")
}

test_write_agreement_does_not_allow_reading if {
	d := decide(velo_app, bike_counters, plain, one({"kind": "write"}))
	denied_because(d, "no read agreement for dataset 'metropole-lyon.bike-counters' held by 'velo-app' or 'velo-startup'")
}

test_agreement_on_another_dataset_does_not_count if {
	d := decide(velo_app, bike_counters, plain, one({"dataset": "metropole-lyon.parkings"}))
	denied_because(d, "no read agreement for dataset 'metropole-lyon.bike-counters' held by 'velo-app' or 'velo-startup'")
}

test_suspended_agreement if {
	d := decide(velo_app, bike_counters, plain, one({"state": "suspended"}))
	d.reasons == [
		"agreement 'agr-1' is suspended",
		"dataset 'metropole-lyon.bike-counters' is restricted: reading it requires an agreement",
	]
	denied(d)
}

test_agreement_not_yet_valid if {
	d := decide(velo_app, bike_counters, plain, one({"valid_from_ns": now + day}))
	denied_because(d, "agreement 'agr-1' is not valid until 2026-03-02T00:00:00Z")
}

test_agreement_expired if {
	d := decide(velo_app, bike_counters, plain, one({"valid_until_ns": now - day}))
	denied_because(d, "agreement 'agr-1' expired at 2026-02-28T00:00:00Z")
}

test_agreement_validity_follows_the_clock if {
	registry := one({"valid_from_ns": now + day, "valid_until_ns": now + (2 * day)})
	input_ := {"subject": velo_app, "dataset": bike_counters, "request": plain}
	not read.decision.allow with input as input_ with data.tdg.registry as registry with time.now_ns as (now + day) - 1
	read.decision.allow with input as input_ with data.tdg.registry as registry with time.now_ns as now + day
	read.decision.allow with input as input_ with data.tdg.registry as registry with time.now_ns as (now + (2 * day)) - 1
	not read.decision.allow with input as input_ with data.tdg.registry as registry with time.now_ns as now + (2 * day)
}

#
# Suspended parties
#

test_suspended_party if {
	d := decide(velo_app, bike_counters, plain, with_party_status(one({}), "velo-app", "suspended"))
	d.reasons == ["party 'velo-app' is suspended"]
	denied(d)
}

test_suspended_org if {
	registry := with_party_status(one({}), "velo-startup", "suspended")
	d := decide(velo_app, bike_counters, plain, registry)
	d.reasons == ["party 'velo-startup' is suspended"]
	denied(d)
	denied_because(decide(velo_app, open_dataset, plain, registry), "party 'velo-startup' is suspended")
}

test_suspended_publisher if {
	registry := with_party_status(bundle({}), "metropole-lyon", "suspended")
	d := decide(lyon_analyst, bike_counters, plain, registry)
	d.reasons == ["party 'metropole-lyon' is suspended"]
	denied(d)
}

#
# Open datasets
#

test_open_dataset_without_agreement if {
	d := decide(velo_app, open_dataset, plain, bundle({}))
	allowed(d)
	d.agreement_id == ""
	d.columns == {
		"counter_id": clear, "commune": clear, "count": clear, "ts": clear,
		"notes": deny, "owner_email": nulled, "health_flag": nulled,
	}
	d.row_filters == []
	d.consent.required == false
	d.aggregate_only == false
}

test_open_dataset_internal_column_requested if {
	d := decide(velo_app, open_dataset, request({"columns": ["count", "notes"]}), bundle({}))
	d.reasons == ["column 'notes' is not granted"]
	denied(d)
}

test_open_dataset_still_needs_a_known_purpose if {
	denied_because(decide(velo_app, open_dataset, request({"purpose": "marketing"}), bundle({})), "purpose 'marketing' is not a known purpose")
	denied_because(decide(velo_app, open_dataset, request({"purpose": ""}), bundle({})), "the request names no purpose")
}

test_open_dataset_prefers_the_agreement if {
	d := decide(velo_app, open_dataset, plain, one({"columns": ["notes"], "territory_filter": {"column": "commune", "codes": ["69123"]}}))
	d.agreement_id == "agr-1"
	d.columns.notes == clear
	d.columns.count == deny
	count(d.row_filters) == 1
}

test_open_dataset_falls_back_when_the_agreement_is_unusable if {
	every registry in [one({"state": "suspended"}), one({"valid_until_ns": now}), one({"purposes": ["research"]})] {
		d := decide(velo_app, open_dataset, plain, registry)
		allowed(d)
		d.agreement_id == ""
		d.columns.notes == deny
	}
}

#
# Restricted and personal datasets without agreement
#

test_restricted_without_agreement if {
	d := decide(velo_app, bike_counters, plain, bundle({}))
	d.reasons == [
		"dataset 'metropole-lyon.bike-counters' is restricted: reading it requires an agreement",
		"no read agreement for dataset 'metropole-lyon.bike-counters' held by 'velo-app' or 'velo-startup'",
	]
	denied(d)
}

test_personal_without_agreement if {
	d := decide(velo_app, with_dataset({"access_level": "personal"}), plain, bundle({}))
	d.reasons == [
		"dataset 'metropole-lyon.bike-counters' is personal: reading it requires an agreement",
		"no read agreement for dataset 'metropole-lyon.bike-counters' held by 'velo-app' or 'velo-startup'",
	]
	denied(d)
}

test_personal_with_agreement if {
	allowed(decide(velo_app, with_dataset({"access_level": "personal"}), plain, one({})))
}

test_missing_access_level_needs_an_agreement if {
	d := decide(velo_app, object.remove(bike_counters, ["access_level"]), plain, bundle({}))
	denied_because(d, "dataset 'metropole-lyon.bike-counters' has no access level: reading it requires an agreement")
}

#
# The publisher's own organisation
#

test_publisher_reads_everything_clear if {
	d := decide(lyon_analyst, bike_counters, request({"filter_columns": ["owner_email"], "group_by": ["health_flag"]}), bundle({}))
	allowed(d)
	every name in column_names {
		d.columns[name] == clear
	}
	d.agreement_id == ""
	d.row_filters == []
	d.consent == {"required": false, "purpose": "", "subject_column": ""}
	d.aggregate_only == false
}

test_publisher_ignores_agreements if {
	registry := bundle({"agr-1": agreement("metropole-lyon", {"columns": ["count"], "aggregate_only": true, "legal_basis": "consent"})})
	d := decide(lyon_analyst, consent_dataset, plain, registry)
	allowed(d)
	d.agreement_id == ""
	d.consent.required == false
}

test_publisher_reads_its_drafts_and_deprecated_datasets if {
	every status in ["draft", "deprecated"] {
		allowed(decide(lyon_analyst, with_dataset({"status": status}), plain, bundle({})))
	}
}

test_publisher_needs_a_known_purpose if {
	d := decide(lyon_analyst, bike_counters, request({"purpose": "marketing"}), bundle({}))
	d.reasons == ["purpose 'marketing' is not a known purpose"]
	denied(d)
}

test_publisher_match_needs_a_publisher if {
	d := decide({"party": "someone", "org": ""}, with_dataset({"publisher": ""}), plain, bundle({}))
	d.allow == false
}

#
# Dataset status
#

test_unpublished_dataset if {
	d := decide(velo_app, with_dataset({"status": "draft"}), plain, one({}))
	d.reasons == ["dataset 'metropole-lyon.bike-counters' is not published (status 'draft')"]
	denied(d)
	denied_because(decide(velo_app, with_dataset({"access_level": "open", "status": "draft"}), plain, bundle({})), "dataset 'metropole-lyon.bike-counters' is not published (status 'draft')")
}

test_deprecated_dataset if {
	d := decide(velo_app, with_dataset({"status": "deprecated"}), plain, one({}))
	d.reasons == ["dataset 'metropole-lyon.bike-counters' is deprecated"]
	denied(d)
}

#
# What the request may do with each column
#

masked := one({"masks": {
	"counter_id": {"method": "hash"},
	"ts": {"method": "generalise", "generalise": {"truncate_to": "day"}},
	"commune": {"method": "null"},
}})

test_requested_column_denied_or_unknown if {
	d := decide(velo_app, bike_counters, request({"columns": ["count", "ts", "nope"]}), one({"columns": ["count"]}))
	d.reasons == [
		"column 'nope' is not a column of dataset 'metropole-lyon.bike-counters'",
		"column 'ts' is not granted",
	]
	denied(d)
}

test_masked_columns_may_be_requested if {
	allowed(decide(velo_app, bike_counters, request({"columns": ["counter_id", "ts", "commune", "owner_email"]}), masked))
}

test_filter_on_non_clear_column if {
	d := decide(velo_app, bike_counters, request({"filter_columns": ["counter_id", "count"]}), masked)
	d.reasons == ["column 'counter_id' in filter_columns must be clear, but its treatment is hash"]
	denied(d)
}

test_group_by_non_clear_column if {
	d := decide(velo_app, bike_counters, request({"group_by": ["ts"], "aggregates": [{"function": "count", "column": "*"}]}), masked)
	d.reasons == ["column 'ts' in group_by must be clear, but its treatment is generalise"]
	denied(d)
}

test_order_by_non_clear_column if {
	d := decide(velo_app, bike_counters, request({"order_by": ["commune"]}), masked)
	d.reasons == ["column 'commune' in order_by must be clear, but its treatment is null"]
	denied(d)
}

test_aggregate_on_non_clear_column if {
	d := decide(velo_app, bike_counters, request({"aggregates": [{"function": "count", "column": "owner_email"}]}), masked)
	d.reasons == ["column 'owner_email' in aggregates must be clear, but its treatment is hash"]
	denied(d)
}

test_denied_column_in_a_clause if {
	d := decide(velo_app, bike_counters, request({"filter_columns": ["ts"]}), one({"columns": ["count"]}))
	d.reasons == ["column 'ts' in filter_columns must be clear, but its treatment is deny"]
}

test_unknown_column_in_a_clause if {
	d := decide(velo_app, bike_counters, request({"order_by": ["nope"]}), one({}))
	d.reasons == ["column 'nope' in order_by is not a column of dataset 'metropole-lyon.bike-counters'"]
}

test_count_needs_no_column if {
	every column in ["", "*"] {
		allowed(decide(velo_app, bike_counters, request({"aggregates": [{"function": "count", "column": column}]}), masked))
	}
	allowed(decide(velo_app, bike_counters, request({"aggregates": [{"function": "count"}]}), masked))
}

test_other_aggregates_need_a_column if {
	d := decide(velo_app, bike_counters, request({"aggregates": [{"function": "sum", "column": "*"}]}), masked)
	d.reasons == ["aggregate sum needs a column"]
}

test_clear_columns_in_every_clause if {
	req := request({
		"columns": ["commune", "count"],
		"filter_columns": ["count", "notes"],
		"group_by": ["commune"],
		"order_by": ["count"],
		"aggregates": [{"function": "avg", "column": "count"}],
	})
	allowed(decide(velo_app, bike_counters, req, one({})))
}

test_malformed_request_lists if {
	d := decide(velo_app, bike_counters, request({"columns": "count", "group_by": [1]}), one({}))
	denied_because(d, "request.columns must be an array of column names")
	denied_because(d, "request.group_by must be an array of column names")
	e := decide(velo_app, bike_counters, request({"aggregates": [{"function": 1, "column": "count"}]}), one({}))
	denied_because(e, "request.aggregates must be an array of {function, column}")
}

test_missing_request_lists_are_empty if {
	allowed(decide(velo_app, bike_counters, {"purpose": "mobility-planning"}, one({})))
}

#
# Bundle absent
#

test_without_bundle_restricted_read_denied if {
	d := decide_without_bundle(velo_app, bike_counters, plain)
	d.reasons == [
		"dataset 'metropole-lyon.bike-counters' is restricted: reading it requires an agreement",
		"no read agreement for dataset 'metropole-lyon.bike-counters' held by 'velo-app' or 'velo-startup'",
		"purpose 'mobility-planning' is not a known purpose",
		"the consent registry is not loaded",
	]
	denied(d)
}

test_without_bundle_open_and_publisher_reads_denied_for_the_purpose if {
	d := decide_without_bundle(velo_app, open_dataset, plain)
	d.reasons == ["purpose 'mobility-planning' is not a known purpose", "the consent registry is not loaded"]
	denied(d)
	p := decide_without_bundle(lyon_analyst, bike_counters, plain)
	p.reasons == ["purpose 'mobility-planning' is not a known purpose", "the consent registry is not loaded"]
}

test_without_bundle_nobody_is_suspended if {
	every subject in [velo_app, lyon_analyst] {
		d := decide_without_bundle(subject, open_dataset, plain)
		every reason in d.reasons {
			not contains(reason, "suspended")
		}
	}
}

test_malformed_bundle_is_like_no_bundle if {
	registry := {"settings": {"purposes": "mobility-planning"}, "parties": [], "agreements": [], "index": "x"}
	d := decide(velo_app, bike_counters, plain, registry)
	denied_because(d, "purpose 'mobility-planning' is not a known purpose")
	denied_because(d, "no read agreement for dataset 'metropole-lyon.bike-counters' held by 'velo-app' or 'velo-startup'")
}

#
# Input edge cases
#

test_unauthenticated if {
	d := decide({"party": "", "org": "velo-startup"}, bike_counters, plain, one({}))
	d.reasons == ["unauthenticated caller"]
	denied(d)
	denied_because(decide({"org": "metropole-lyon"}, bike_counters, plain, bundle({})), "unauthenticated caller")
}

test_no_dataset_named if {
	d := decide(velo_app, object.remove(bike_counters, ["id"]), plain, one({}))
	denied_because(d, "the request names no dataset")
}

test_duplicate_column_names_deny if {
	dataset := with_dataset({"columns": [
		{"name": "a", "type": "string", "sensitivity": "public"},
		{"name": "a", "type": "string", "sensitivity": "personal"},
	]})
	d := decide(velo_app, dataset, plain, one({}))
	d.reasons == ["dataset 'metropole-lyon.bike-counters' has a column without a name or a column name listed twice"]
	d.columns == {"a": deny}
}

test_empty_input_is_a_deny_object if {
	d := read.decision with input as {}
	denied(d)
	d.columns == {}
	d.purpose == ""
	d.reasons == [
		"dataset '' is not published (status '')",
		"the consent registry is not loaded",
		"the request names no dataset",
		"the request names no purpose",
		"unauthenticated caller",
	]
}

test_subject_without_org_reads_an_open_dataset if {
	d := decide({"party": "bare-app"}, open_dataset, plain, bundle({}))
	allowed(d)
	denied_because(decide({"party": "bare-app"}, bike_counters, plain, bundle({})), "no read agreement for dataset 'metropole-lyon.bike-counters' held by 'bare-app'")
}

test_refusal_without_a_specific_problem_still_has_a_reason if {
	d := read.decision with input as {"subject": velo_app, "dataset": bike_counters, "request": plain}
		with data.tdg.registry as one({})
		with time.now_ns as now
		with read.permitted as false
	d.reasons == ["read refused"]
	denied(d)
}

test_column_without_a_name_denies if {
	every columns in [
		[{"name": "a", "sensitivity": "public"}, {"type": "string", "sensitivity": "public"}],
		[{"name": "a", "sensitivity": "public"}, {"name": "", "sensitivity": "public"}],
		[{"name": "a", "sensitivity": "public"}, {"name": 5, "sensitivity": "public"}],
		[{"name": "a", "sensitivity": "public"}, "b"],
	] {
		d := decide(velo_app, with_dataset({"columns": columns}), plain, one({}))
		d.reasons == ["dataset 'metropole-lyon.bike-counters' has a column without a name or a column name listed twice"]
		d.columns == {"a": deny}
	}
}
