package tdg.lib.registry_test

import data.tdg.lib.registry

# 2026-03-01T00:00:00Z
now := 1772323200000000000

day := 86400000000000

read_agreement(consumer, overrides) := object.union(
	{
		"dataset": "lyon.bikes",
		"consumer": consumer,
		"kind": "read",
		"state": "active",
		"purposes": ["research", "mobility-planning"],
		"valid_from_ns": now - day,
		"valid_until_ns": 0,
	},
	overrides,
)

bundle := {
	"revision": 3,
	"settings": {
		"purposes": ["research", "mobility-planning"],
		"default_min_group_size": 20,
		"default_masks": {"personal": "hash"},
	},
	"parties": {
		"app": {"kind": "application", "organisation": "org", "status": "active"},
		"org": {"kind": "private-partner", "organisation": "org", "status": "suspended"},
	},
	"agreements": {
		"agr-app": read_agreement("app", {}),
		"agr-org": read_agreement("org", {"state": "suspended"}),
		"agr-w": read_agreement("app", {"kind": "write"}),
		"agr-other": read_agreement("app", {"dataset": "lyon.parkings"}),
	},
	"index": {
		"app": {"lyon.bikes": {"read": ["agr-app", "agr-other", "agr-missing"], "write": ["agr-w"]}},
		"org": {"lyon.bikes": {"read": ["agr-org"], "write": []}},
	},
}

app := {"party": "app", "org": "org", "roles": []}

test_loaded_only_with_the_bundle if {
	registry.loaded with data.tdg.registry as bundle
	not registry.loaded
	not registry.loaded with data.tdg.registry as {"parties": {}}
}

test_settings if {
	registry.default_min_group_size == 20 with data.tdg.registry as bundle
	registry.default_masks == {"personal": "hash"} with data.tdg.registry as bundle
}

test_settings_without_bundle if {
	registry.settings == {}
	registry.default_masks == {}
	registry.default_min_group_size == 10
}

test_known_purpose if {
	registry.known_purpose("research") with data.tdg.registry as bundle
	not registry.known_purpose("marketing") with data.tdg.registry as bundle
	not registry.known_purpose("") with data.tdg.registry as object.union(bundle, {"settings": {"purposes": [""]}})
	not registry.known_purpose("research")
}

test_suspended if {
	registry.suspended("org") with data.tdg.registry as bundle
	not registry.suspended("app") with data.tdg.registry as bundle
	not registry.suspended("nobody") with data.tdg.registry as bundle
	not registry.suspended("org")
}

test_suspended_ids if {
	registry.suspended_ids(app) == {"org"} with data.tdg.registry as bundle
	registry.suspended_ids({"party": "app"}) == set() with data.tdg.registry as bundle
	registry.suspended_ids(app) == set()
}

test_organisation if {
	registry.organisation("app") == "org" with data.tdg.registry as bundle
	registry.organisation("org") == "org" with data.tdg.registry as bundle
	registry.organisation("bare") == "" with data.tdg.registry as {"parties": {"bare": {"status": "active"}}}
	registry.organisation("odd") == "" with data.tdg.registry as {"parties": {"odd": {"organisation": 7}}}
	not registry.organisation("nobody") with data.tdg.registry as bundle
	not registry.organisation("") with data.tdg.registry as {"parties": {"": {"organisation": "org"}}}
	not registry.organisation("app")
}

test_consumers if {
	registry.consumers(app) == {"app", "org"}
	registry.consumers({"party": "app", "org": ""}) == {"app"}
	registry.consumers({"party": "same", "org": "same"}) == {"same"}
	registry.consumers({"party": 1, "org": ["x"]}) == set()
}

test_held_follows_the_index if {
	held := registry.held(app, "lyon.bikes", "read") with data.tdg.registry as bundle
	object.keys(held) == {"agr-app", "agr-org"}
	object.keys(registry.held(app, "lyon.bikes", "write")) == {"agr-w"} with data.tdg.registry as bundle
	registry.held({"party": "app"}, "lyon.bikes", "read") == {"agr-app": bundle.agreements["agr-app"]} with data.tdg.registry as bundle
	registry.held(app, "lyon.bikes", "read") == {}
}

test_usable if {
	registry.usable(read_agreement("app", {})) with time.now_ns as now
	not registry.usable(read_agreement("app", {"state": "suspended"})) with time.now_ns as now
	not registry.usable(read_agreement("app", {"valid_from_ns": now + 1})) with time.now_ns as now
	registry.usable(read_agreement("app", {"valid_from_ns": now})) with time.now_ns as now
	registry.usable(read_agreement("app", {"valid_until_ns": now + 1})) with time.now_ns as now
	not registry.usable(read_agreement("app", {"valid_until_ns": now})) with time.now_ns as now
	not registry.usable(read_agreement("app", {"valid_from_ns": "yesterday"})) with time.now_ns as now
	not registry.usable(read_agreement("app", {"valid_until_ns": null})) with time.now_ns as now
}

test_covers if {
	registry.covers(read_agreement("app", {}), "research")
	not registry.covers(read_agreement("app", {}), "public-health")
	not registry.covers(read_agreement("app", {"purposes": "research"}), "research")
}

test_refusals if {
	registry.refusals("a", read_agreement("app", {})) == set() with time.now_ns as now
	registry.refusals("a", read_agreement("app", {"state": "suspended", "valid_until_ns": now - day})) == {
		"agreement 'a' is suspended",
		"agreement 'a' expired at 2026-02-28T00:00:00Z",
	} with time.now_ns as now
	registry.refusals("a", read_agreement("app", {"valid_from_ns": now + day})) == {"agreement 'a' is not valid until 2026-03-02T00:00:00Z"} with time.now_ns as now
	registry.refusals("a", object.remove(read_agreement("app", {"valid_from_ns": "soon"}), ["state"])) == {
		"agreement 'a' is in no state",
		"agreement 'a' has a malformed validity period",
	} with time.now_ns as now
}

test_purpose_refusal if {
	registry.purpose_refusal("a", read_agreement("app", {}), "public-health") == "purpose 'public-health' is not among the purposes of agreement 'a' (mobility-planning, research)"
	not registry.purpose_refusal("a", read_agreement("app", {}), "research")
}

test_missing if {
	registry.missing(app, "lyon.bikes", "write") == "no write agreement for dataset 'lyon.bikes' held by 'app' or 'org'"
	registry.missing({}, "lyon.bikes", "read") == "no read agreement for dataset 'lyon.bikes' held by the caller"
}

test_held_ids_are_the_keys_of_held if {
	registry.held_ids(app, "lyon.bikes", "read") == {"agr-app", "agr-org"} with data.tdg.registry as bundle
	registry.held_ids(app, "lyon.bikes", "write") == {"agr-w"} with data.tdg.registry as bundle
	registry.held_ids({"party": "app"}, "lyon.bikes", "read") == {"agr-app"} with data.tdg.registry as bundle
	registry.held_ids(app, "lyon.bikes", "read") == set()
}

test_valid_now if {
	registry.valid_now(now - day, 0) with time.now_ns as now
	registry.valid_now(now, now + 1) with time.now_ns as now
	not registry.valid_now(now + 1, 0) with time.now_ns as now
	not registry.valid_now(now - day, now) with time.now_ns as now
	not registry.valid_now(now - day, -1) with time.now_ns as now
	not registry.valid_now("yesterday", 0) with time.now_ns as now
	not registry.valid_now(0, null) with time.now_ns as now
}

# Several agreements on one dataset: "a-1" (app) and "a-3" (org) usable, the others not.
several := {
	"settings": bundle.settings,
	"parties": bundle.parties,
	"agreements": {
		"a-0": read_agreement("org", {"state": "suspended"}),
		"a-1": read_agreement("app", {"purposes": ["research"]}),
		"a-2": read_agreement("app", {"valid_until_ns": now - 1}),
		"a-3": read_agreement("org", {}),
		"a-4": read_agreement("app", {"kind": "write"}),
	},
	"index": {
		"app": {"lyon.bikes": {"read": ["a-4", "a-2", "a-1"], "write": ["a-4"]}},
		"org": {"lyon.bikes": {"read": ["a-3", "a-0"], "write": []}},
	},
}

test_first_usable_for_is_the_smallest_usable_id_covering_the_purpose if {
	registry.first_usable_for(app, "lyon.bikes", "read", "research") == "a-1" with data.tdg.registry as several
		with time.now_ns as now
	registry.first_usable_for(app, "lyon.bikes", "read", "mobility-planning") == "a-3" with data.tdg.registry as several
		with time.now_ns as now
	registry.first_usable_for({"party": "app"}, "lyon.bikes", "read", "research") == "a-1" with data.tdg.registry as several
		with time.now_ns as now
	not registry.first_usable_for({"party": "app"}, "lyon.bikes", "read", "mobility-planning") with data.tdg.registry as several
		with time.now_ns as now
	not registry.first_usable_for(app, "lyon.bikes", "read", "public-health") with data.tdg.registry as several
		with time.now_ns as now
	not registry.first_usable_for(app, "lyon.bikes", "read", "research") with time.now_ns as now
}

test_first_usable_for_skips_a_smallest_id_listed_under_another_consumer if {
	# "a-0" is the smallest id listed, under app, but it is org's agreement: ignored
	misfiled := object.union(several, {
		"agreements": {"a-0": read_agreement("org", {})},
		"index": {"app": {"lyon.bikes": {"read": ["a-0", "a-1"]}}, "org": {"lyon.bikes": {"read": ["a-3"]}}},
	})
	registry.first_usable_for(app, "lyon.bikes", "read", "research") == "a-1" with data.tdg.registry as misfiled
		with time.now_ns as now
	registry.first_usable_for({"party": "app"}, "lyon.bikes", "read", "mobility-planning") == "a-1" with data.tdg.registry as object.union(misfiled, {"agreements": {"a-1": read_agreement("app", {})}})
		with time.now_ns as now
}

test_first_usable_ignores_purposes if {
	registry.first_usable(app, "lyon.bikes", "write") == "a-4" with data.tdg.registry as several
		with time.now_ns as now
	registry.first_usable(app, "lyon.bikes", "write") == "agr-w" with data.tdg.registry as bundle
		with time.now_ns as now
	not registry.first_usable(app, "lyon.bikes", "write") with data.tdg.registry as several
		with time.now_ns as now - (2 * day)
}
