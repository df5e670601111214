package tdg.rpc_test

import data.tdg.lib.roles
import data.tdg.rpc

catalog := "tdg.catalog.v1.CatalogService"

management_rpcs := ["RegisterDataset", "UpdateMetadata", "EvolveSchema", "PublishDataset", "DeprecateDataset"]

read_rpcs := ["GetDataset", "ListDatasets", "SearchDatasets", "ExportDcat"]

admin := {"party": "platform-ops", "org": "tdg-platform", "roles": [roles.platform_admin]}

lyon_officer := {"party": "lyon-data-office", "org": "metropole-lyon", "roles": [roles.data_officer]}

grenoble_officer := {"party": "grenoble-data-office", "org": "grenoble-alpes", "roles": [roles.data_officer]}

mobility_app := {"party": "velo-app", "org": "velo-startup", "roles": []}

bike_counters := {"dataset_id": "metropole-lyon.bike-counters", "publisher": "metropole-lyon"}

# The interceptor's input for a catalog call.
call(rpc_name, subject, resource) := {
	"method": sprintf("/%s/%s", [catalog, rpc_name]),
	"service": catalog,
	"rpc": rpc_name,
	"subject": subject,
	"resource": resource,
}

decide(request) := decision if {
	decision := rpc.decision with input as request
}

# The decision is always exactly {allow, reasons, draft_scope}, whatever the call.
well_formed(decision) if {
	object.keys(decision) == {"allow", "reasons", "draft_scope"}
	is_boolean(decision.allow)
	is_array(decision.reasons)
	object.keys(decision.draft_scope) == {"all", "publishers"}
}

allowed(decision) if {
	well_formed(decision)
	decision.allow == true
	decision.reasons == []
}

denied_because(decision, reason) if {
	well_formed(decision)
	decision.allow == false
	reason in decision.reasons
}

#
# The example from the contract
#

test_example_input_is_allowed if {
	d := decide({
		"method": "/tdg.catalog.v1.CatalogService/RegisterDataset",
		"service": "tdg.catalog.v1.CatalogService",
		"rpc": "RegisterDataset",
		"subject": {"party": "lyon-data-office", "org": "metropole-lyon", "roles": ["data-officer"]},
		"resource": {"dataset_id": "metropole-lyon.bike-counters", "publisher": "metropole-lyon"},
	})
	d == {"allow": true, "reasons": [], "draft_scope": {"all": false, "publishers": ["metropole-lyon"]}}
}

#
# Management: platform-admin
#

test_admin_manages_any_publishers_dataset if {
	every rpc_name in management_rpcs {
		allowed(decide(call(rpc_name, admin, bike_counters)))
	}
}

test_admin_needs_the_publisher_named if {
	d := decide(call("UpdateMetadata", admin, {"dataset_id": "metropole-lyon.bike-counters"}))
	denied_because(d, "UpdateMetadata requires a dataset with a publisher, and the request names none")
}

#
# Management: data-officer
#

test_officer_manages_own_publishers_datasets if {
	every rpc_name in management_rpcs {
		allowed(decide(call(rpc_name, lyon_officer, bike_counters)))
	}
}

test_officer_of_another_org_is_denied_with_the_role_needed if {
	every rpc_name in management_rpcs {
		d := decide(call(rpc_name, grenoble_officer, bike_counters))
		denied_because(d, sprintf(
			"role data-officer of publisher 'metropole-lyon' (or platform-admin) required to call %s on 'metropole-lyon.bike-counters'",
			[rpc_name],
		))
		count(d.reasons) == 1
	}
}

test_officer_without_publisher_is_denied if {
	d := decide(call("RegisterDataset", lyon_officer, {}))
	denied_because(d, "RegisterDataset requires a dataset with a publisher, and the request names none")
	count(d.reasons) == 1
}

test_officer_with_empty_publisher_is_denied if {
	d := decide(call("PublishDataset", lyon_officer, {"dataset_id": "x", "publisher": ""}))
	denied_because(d, "PublishDataset requires a dataset with a publisher, and the request names none")
}

test_officer_without_org_cannot_match_an_empty_publisher if {
	officer := object.union(lyon_officer, {"org": ""})
	not decide(call("EvolveSchema", officer, {"publisher": ""})).allow
	not decide(call("EvolveSchema", object.remove(lyon_officer, ["org"]), bike_counters)).allow
}

test_officer_org_must_equal_publisher_exactly if {
	not decide(call("UpdateMetadata", lyon_officer, {"publisher": "metropole-lyon-2"})).allow
	not decide(call("UpdateMetadata", lyon_officer, {"publisher": "Metropole-Lyon"})).allow
}

test_org_without_officer_role_cannot_manage if {
	# belonging to the publisher is not enough: the role is
	staff := {"party": "lyon-intern", "org": "metropole-lyon", "roles": ["reader"]}
	d := decide(call("DeprecateDataset", staff, bike_counters))
	denied_because(d, "role data-officer of publisher 'metropole-lyon' (or platform-admin) required to call DeprecateDataset on 'metropole-lyon.bike-counters'")
}

test_refusal_names_the_publisher_when_no_dataset_id if {
	d := decide(call("RegisterDataset", grenoble_officer, {"publisher": "metropole-lyon"}))
	denied_because(d, "role data-officer of publisher 'metropole-lyon' (or platform-admin) required to call RegisterDataset on 'a dataset of metropole-lyon'")
}

test_refusal_names_the_full_method_when_rpc_missing if {
	request := object.remove(call("RegisterDataset", grenoble_officer, bike_counters), ["rpc"])
	denied_because(decide(request), "role data-officer of publisher 'metropole-lyon' (or platform-admin) required to call /tdg.catalog.v1.CatalogService/RegisterDataset on 'metropole-lyon.bike-counters'")
}

#
# Management: applications
#

test_application_cannot_manage if {
	every rpc_name in management_rpcs {
		d := decide(call(rpc_name, mobility_app, bike_counters))
		denied_because(d, sprintf(
			"role data-officer of publisher 'metropole-lyon' (or platform-admin) required to call %s on 'metropole-lyon.bike-counters'",
			[rpc_name],
		))
	}
}

test_application_cannot_manage_its_own_orgs_dataset_without_the_role if {
	app := object.union(mobility_app, {"org": "metropole-lyon"})
	not decide(call("RegisterDataset", app, bike_counters)).allow
}

#
# Reads
#

test_application_without_roles_reads_the_catalog if {
	every rpc_name in read_rpcs {
		allowed(decide(call(rpc_name, mobility_app, {})))
	}
}

test_application_reads_a_named_dataset if {
	allowed(decide(call("GetDataset", mobility_app, bike_counters)))
}

test_officer_and_admin_read_other_publishers if {
	every rpc_name in read_rpcs {
		allowed(decide(call(rpc_name, grenoble_officer, bike_counters)))
		allowed(decide(call(rpc_name, admin, {})))
	}
}

test_party_without_org_or_roles_key_reads if {
	allowed(decide(call("ListDatasets", {"party": "bare-app"}, {})))
}

#
# Authentication
#

test_empty_party_is_denied_as_unauthenticated if {
	every rpc_name in array.concat(read_rpcs, management_rpcs) {
		d := decide(call(rpc_name, object.union(admin, {"party": ""}), bike_counters))
		d.reasons == ["unauthenticated caller"]
		denied_because(d, "unauthenticated caller")
	}
}

test_missing_or_malformed_party_is_denied_as_unauthenticated if {
	denied_because(decide(call("ListDatasets", {"org": "x", "roles": []}, {})), "unauthenticated caller")
	denied_because(decide(call("ListDatasets", {"party": 42, "roles": []}, {})), "unauthenticated caller")
	denied_because(decide(object.remove(call("ListDatasets", {}, {}), ["subject"])), "unauthenticated caller")
}

#
# Methods no rule governs (fail closed)
#

test_unknown_catalog_method_is_denied if {
	d := decide(call("DropEverything", admin, bike_counters))
	d.reasons == ["method /tdg.catalog.v1.CatalogService/DropEverything is not governed by any rule"]
	denied_because(d, "method /tdg.catalog.v1.CatalogService/DropEverything is not governed by any rule")
}

test_method_of_an_ungoverned_service_is_denied if {
	request := {
		"method": "/tdg.query.v1.QueryService/Query",
		"service": "tdg.query.v1.QueryService",
		"rpc": "Query",
		"subject": admin,
		"resource": {},
	}
	denied_because(decide(request), "method /tdg.query.v1.QueryService/Query is not governed by any rule")
}

test_method_names_match_exactly if {
	not decide(object.union(call("GetDataset", admin, {}), {"method": "tdg.catalog.v1.CatalogService/GetDataset"})).allow
	not decide(object.union(call("GetDataset", admin, {}), {"method": "/tdg.catalog.v1.CatalogService/getdataset"})).allow
}

test_unknown_method_and_empty_party_give_both_reasons if {
	d := decide(call("DropEverything", {"party": "", "roles": []}, {}))
	d.reasons == [
		"method /tdg.catalog.v1.CatalogService/DropEverything is not governed by any rule",
		"unauthenticated caller",
	]
}

test_empty_input_is_a_deny_object if {
	d := decide({})
	d == {
		"allow": false,
		"reasons": ["method  is not governed by any rule", "unauthenticated caller"],
		"draft_scope": {"all": false, "publishers": []},
	}
}

test_class_without_rules_is_denied_with_a_reason if {
	# a method added to the table before its class has rules is refused, not allowed silently
	permissions := object.union(rpc.permissions, {"/tdg.ingest.v1.IngestService/Publish": "ingest.write"})
	request := {
		"method": "/tdg.ingest.v1.IngestService/Publish",
		"service": "tdg.ingest.v1.IngestService",
		"rpc": "Publish",
		"subject": admin,
		"resource": bike_counters,
	}
	d := rpc.decision with input as request with rpc.permissions as permissions
	denied_because(d, "Publish requires permission ingest.write, which the caller does not hold")
}

#
# The method table
#

test_every_catalog_method_has_its_class if {
	every rpc_name in management_rpcs {
		rpc.permissions[sprintf("/%s/%s", [catalog, rpc_name])] == "catalog.manage"
	}
	every rpc_name in read_rpcs {
		rpc.permissions[sprintf("/%s/%s", [catalog, rpc_name])] == "catalog.read"
	}
	count(rpc.permissions) == count(management_rpcs) + count(read_rpcs)
}

test_every_table_entry_is_a_full_grpc_method if {
	every method, class in rpc.permissions {
		regex.match(`^/tdg\.[a-z]+\.v[0-9]+\.[A-Za-z]+/[A-Z][A-Za-z]+$`, method)
		regex.match(`^[a-z]+\.[a-z]+$`, class)
	}
}

#
# draft_scope
#

test_admin_sees_all_drafts if {
	decide(call("ListDatasets", admin, {})).draft_scope == {"all": true, "publishers": []}
}

test_officer_sees_own_publishers_drafts if {
	decide(call("ListDatasets", lyon_officer, {})).draft_scope == {"all": false, "publishers": ["metropole-lyon"]}
}

test_application_with_org_sees_its_orgs_drafts if {
	decide(call("SearchDatasets", mobility_app, {})).draft_scope == {"all": false, "publishers": ["velo-startup"]}
}

test_caller_without_org_sees_no_drafts if {
	no_org := {"party": "bare-app", "org": "", "roles": []}
	decide(call("GetDataset", no_org, bike_counters)).draft_scope == {"all": false, "publishers": []}
	decide(call("GetDataset", {"party": "bare-app"}, bike_counters)).draft_scope == {"all": false, "publishers": []}
}

test_draft_scope_is_given_on_deny_too if {
	d := decide(call("RegisterDataset", grenoble_officer, bike_counters))
	d.allow == false
	d.draft_scope == {"all": false, "publishers": ["grenoble-alpes"]}
}

test_unauthenticated_caller_sees_no_drafts_whatever_its_roles if {
	d := decide(call("ListDatasets", object.union(admin, {"party": ""}), {}))
	d.draft_scope == {"all": false, "publishers": []}
}
