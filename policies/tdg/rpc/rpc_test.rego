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
		"method": "/tdg.export.v1.ExportService/Export",
		"service": "tdg.export.v1.ExportService",
		"rpc": "Export",
		"subject": admin,
		"resource": {},
	}
	denied_because(decide(request), "method /tdg.export.v1.ExportService/Export is not governed by any rule")
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
	permissions := object.union(rpc.permissions, {"/tdg.export.v1.ExportService/Export": "export.run"})
	request := {
		"method": "/tdg.export.v1.ExportService/Export",
		"service": "tdg.export.v1.ExportService",
		"rpc": "Export",
		"subject": admin,
		"resource": bike_counters,
	}
	d := rpc.decision with input as request with rpc.permissions as permissions
	denied_because(d, "Export requires permission export.run, which the caller does not hold")
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
	catalog_methods := {method | some method, _ in rpc.permissions; startswith(method, sprintf("/%s/", [catalog]))}
	count(catalog_methods) == count(management_rpcs) + count(read_rpcs)
}

test_every_table_entry_is_a_full_grpc_method if {
	every method, class in rpc.permissions {
		# tdg's own services, or Arrow Flight's (served by the query service)
		regex.match(`^/(tdg\.[a-z]+\.v[0-9]+\.[A-Za-z]+|arrow\.flight\.protocol\.FlightService)/[A-Z][A-Za-z]+$`, method)
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

#
# Consent service
#

consent := "tdg.consent.v1.ConsentService"

# Every consent method and its class, as the contract's table lists them.
consent_classes := {
	"RegisterParty": "parties.manage",
	"SuspendParty": "parties.manage",
	"ReinstateParty": "parties.manage",
	"GetParty": "registry.read",
	"ListParties": "registry.read",
	"ListPurposes": "registry.read",
	"ListProducerGrants": "registry.read",
	"RequestAccess": "access.request",
	"ApproveAccess": "access.decide",
	"RefuseAccess": "access.decide",
	"SuspendAgreement": "access.decide",
	"ResumeAgreement": "access.decide",
	"RevokeAgreement": "access.revoke",
	"GetAgreement": "agreement.read",
	"ListAgreements": "agreement.read",
	"GiveConsent": "consent.record",
	"WithdrawConsent": "consent.record",
	"ListConsents": "consent.record",
	"RequestErasure": "consent.record",
	"GetErasure": "erasure.read",
	"ListErasures": "erasure.read",
	"StreamSubjectSet": "consent.subjects",
}

rpcs_of(class) := [rpc_name | some rpc_name, c in consent_classes; c == class]

velo_officer := {"party": "velo-office", "org": "velo-startup", "roles": [roles.data_officer]}

velo_analyst := {"party": "velo-analyst", "org": "velo-startup", "roles": []}

lyon_intern := {"party": "lyon-intern", "org": "metropole-lyon", "roles": []}

other_app := {"party": "parking-app", "org": "parking-co", "roles": []}

registrar := {"party": "citizens-portal", "org": "tdg-platform", "roles": [roles.consent_registrar]}

alice := {"party": "subj-alice", "org": "", "roles": [roles.citizen]}

bob := {"party": "subj-bob", "roles": [roles.citizen]}

query_service := {"party": "tdg-query", "org": "tdg-platform", "roles": [roles.platform_service]}

# An agreement of velo-app (velo-startup) on a dataset of metropole-lyon.
agreement := {
	"dataset_id": "metropole-lyon.bike-counters",
	"publisher": "metropole-lyon",
	"agreement_id": "agr-1",
	"consumer": "velo-app",
	"consumer_org": "velo-startup",
}

alices_data := {"subject_id": "subj-alice"}

consent_call(rpc_name, subject, resource) := {
	"method": sprintf("/%s/%s", [consent, rpc_name]),
	"service": consent,
	"rpc": rpc_name,
	"subject": subject,
	"resource": resource,
}

allowed_for_all(class, subjects, resource) if {
	every rpc_name in rpcs_of(class) {
		every subject in subjects {
			allowed(decide(consent_call(rpc_name, subject, resource)))
		}
	}
}

denied_for_all(class, subjects, resource) if {
	every rpc_name in rpcs_of(class) {
		every subject in subjects {
			d := decide(consent_call(rpc_name, subject, resource))
			d.allow == false
			count(d.reasons) > 0
		}
	}
}

test_every_consent_method_has_its_class if {
	every rpc_name, class in consent_classes {
		rpc.permissions[sprintf("/%s/%s", [consent, rpc_name])] == class
	}
	consent_methods := {method | some method, _ in rpc.permissions; startswith(method, sprintf("/%s/", [consent]))}
	count(consent_methods) == count(consent_classes)
}

# parties.manage

test_admin_manages_parties if {
	allowed_for_all("parties.manage", [admin], {})
}

test_only_admin_manages_parties if {
	denied_for_all("parties.manage", [lyon_officer, velo_officer, registrar, query_service, mobility_app], {})
	d := decide(consent_call("SuspendParty", lyon_officer, {}))
	d.reasons == ["role platform-admin required to call SuspendParty"]
}

# registry.read

test_any_authenticated_caller_reads_the_registry if {
	allowed_for_all("registry.read", [mobility_app, alice, registrar, {"party": "bare-app"}], {})
}

test_unauthenticated_caller_cannot_read_the_registry if {
	every rpc_name in rpcs_of("registry.read") {
		decide(consent_call(rpc_name, {"party": "", "roles": [roles.platform_admin]}, {})).reasons == ["unauthenticated caller"]
	}
}

# access.request

test_access_request_by_admin_consumer_or_its_officer if {
	allowed_for_all("access.request", [admin, mobility_app, velo_officer], agreement)
}

test_access_request_for_its_org_by_the_officer_without_consumer_named if {
	allowed(decide(consent_call("RequestAccess", velo_officer, {"consumer_org": "velo-startup", "dataset_id": "x"})))
}

test_access_request_refused_to_others if {
	# the publisher cannot ask on the consumer's behalf; a consumer org member needs the role
	denied_for_all("access.request", [lyon_officer, velo_analyst, other_app, registrar], agreement)
	d := decide(consent_call("RequestAccess", lyon_officer, agreement))
	d.reasons == ["RequestAccess for consumer 'velo-app' requires being that consumer, a data-officer of its organisation 'velo-startup', or platform-admin"]
}

test_access_request_needs_a_named_consumer if {
	# empty fields never match an empty subject field
	d := decide(consent_call("RequestAccess", {"party": "x", "org": "", "roles": [roles.data_officer]}, {"consumer": "", "consumer_org": ""}))
	d.reasons == ["RequestAccess for consumer (none) requires being that consumer, a data-officer of its organisation (none), or platform-admin"]
}

# access.decide

test_access_decided_by_admin_or_publishers_officer if {
	allowed_for_all("access.decide", [admin, lyon_officer], agreement)
}

test_admin_decides_without_a_publisher if {
	allowed_for_all("access.decide", [admin], {"agreement_id": "agr-1"})
}

test_access_decide_refused_to_others if {
	denied_for_all("access.decide", [grenoble_officer, lyon_intern, mobility_app, velo_officer, registrar], agreement)
	d := decide(consent_call("ApproveAccess", grenoble_officer, agreement))
	d.reasons == ["role data-officer of publisher 'metropole-lyon' (or platform-admin) required to call ApproveAccess on agreement 'agr-1'"]
}

test_access_decide_without_publisher_refused_to_officers if {
	officer := object.union(lyon_officer, {"org": ""})
	denied_for_all("access.decide", [officer, lyon_officer], {"agreement_id": "agr-1", "publisher": ""})
	d := decide(consent_call("SuspendAgreement", lyon_officer, {"dataset_id": "metropole-lyon.bike-counters"}))
	d.reasons == ["role data-officer of publisher (none) (or platform-admin) required to call SuspendAgreement on an agreement on 'metropole-lyon.bike-counters'"]
}

# access.revoke

test_revoke_by_either_side if {
	allowed_for_all("access.revoke", [admin, lyon_officer, mobility_app, velo_officer], agreement)
}

test_revoke_refused_to_others if {
	denied_for_all("access.revoke", [velo_analyst, lyon_intern, grenoble_officer, other_app, registrar], agreement)
	d := decide(consent_call("RevokeAgreement", velo_analyst, agreement))
	d.reasons == ["RevokeAgreement on agreement 'agr-1' requires a data-officer of publisher 'metropole-lyon', the consumer 'velo-app' or a data-officer of its organisation 'velo-startup', or platform-admin"]
}

test_revoke_with_empty_resource_only_admin if {
	allowed(decide(consent_call("RevokeAgreement", admin, {})))
	d := decide(consent_call("RevokeAgreement", {"party": "p", "org": "", "roles": [roles.data_officer]}, {}))
	d.reasons == ["RevokeAgreement on an agreement requires a data-officer of publisher (none), the consumer (none) or a data-officer of its organisation (none), or platform-admin"]
}

# agreement.read

test_agreement_read_by_admin_publisher_officer_and_consumer_side if {
	# any member of the consumer's organisation reads its agreements
	allowed_for_all("agreement.read", [admin, lyon_officer, mobility_app, velo_officer, velo_analyst], agreement)
}

test_agreement_read_refused_to_others if {
	denied_for_all("agreement.read", [grenoble_officer, lyon_intern, other_app, registrar, query_service], agreement)
	d := decide(consent_call("GetAgreement", lyon_intern, agreement))
	d.reasons == ["GetAgreement on agreement 'agr-1' requires a data-officer of publisher 'metropole-lyon', the consumer 'velo-app' or its organisation 'velo-startup', or platform-admin"]
}

test_list_agreements_without_party_filter_only_admin if {
	every resource in [{}, {"dataset_id": "metropole-lyon.bike-counters"}] {
		allowed(decide(consent_call("ListAgreements", admin, resource)))
		every subject in [lyon_officer, mobility_app, velo_officer] {
			d := decide(consent_call("ListAgreements", subject, resource))
			d.reasons == ["ListAgreements without a publisher, consumer or consumer_org filter requires platform-admin"]
		}
	}
}

test_list_agreements_filtered_by_publisher if {
	resource := {"publisher": "metropole-lyon"}
	allowed(decide(consent_call("ListAgreements", lyon_officer, resource)))
	not decide(consent_call("ListAgreements", grenoble_officer, resource)).allow
	not decide(consent_call("ListAgreements", lyon_intern, resource)).allow
	not decide(consent_call("ListAgreements", mobility_app, resource)).allow
}

test_list_agreements_filtered_by_consumer if {
	allowed(decide(consent_call("ListAgreements", mobility_app, {"consumer": "velo-app"})))
	not decide(consent_call("ListAgreements", other_app, {"consumer": "velo-app"})).allow
	not decide(consent_call("ListAgreements", velo_analyst, {"consumer": "velo-app"})).allow
}

test_list_agreements_filtered_by_consumer_org if {
	allowed(decide(consent_call("ListAgreements", velo_analyst, {"consumer_org": "velo-startup"})))
	allowed(decide(consent_call("ListAgreements", mobility_app, {"consumer_org": "velo-startup"})))
	not decide(consent_call("ListAgreements", other_app, {"consumer_org": "velo-startup"})).allow
}

# consent.record

test_consent_recorded_by_admin_registrar_or_the_citizen if {
	allowed_for_all("consent.record", [admin, registrar, alice], alices_data)
}

test_consent_record_refused_to_others if {
	no_role := {"party": "subj-alice", "roles": []}
	denied_for_all("consent.record", [bob, no_role, lyon_officer, query_service, mobility_app], alices_data)
	d := decide(consent_call("GiveConsent", bob, alices_data))
	d.reasons == ["GiveConsent for data subject 'subj-alice' requires role consent-registrar, role citizen acting for themselves, or platform-admin"]
}

test_citizen_needs_the_subject_named if {
	denied_for_all("consent.record", [alice], {})
	denied_for_all("consent.record", [alice], {"subject_id": ""})
	allowed_for_all("consent.record", [registrar], {})
}

# erasure.read

test_erasure_read_by_admin_registrar_citizen_or_any_officer if {
	allowed_for_all("erasure.read", [admin, registrar, alice, lyon_officer, grenoble_officer], alices_data)
}

test_erasure_read_refused_to_others if {
	denied_for_all("erasure.read", [bob, mobility_app, query_service, lyon_intern], alices_data)
	d := decide(consent_call("GetErasure", bob, alices_data))
	d.reasons == ["GetErasure for data subject 'subj-alice' requires role consent-registrar, data-officer, role citizen acting for themselves, or platform-admin"]
}

# consent.subjects

test_subject_sets_streamed_to_platform_services if {
	allowed_for_all("consent.subjects", [admin, query_service], {"dataset_id": "metropole-lyon.bike-counters"})
}

test_subject_sets_refused_to_others if {
	denied_for_all("consent.subjects", [registrar, lyon_officer, mobility_app, alice], {})
	d := decide(consent_call("StreamSubjectSet", mobility_app, {}))
	d.reasons == ["role platform-service (or platform-admin) required to call StreamSubjectSet"]
}

#
# Suspension (every call, whatever the permission)
#

registry_with(parties) := {"revision": 1, "parties": parties}

velo_startup_suspended := registry_with({
	"velo-app": {"kind": "application", "organisation": "velo-startup", "status": "active"},
	"velo-startup": {"kind": "private-partner", "organisation": "velo-startup", "status": "suspended"},
})

velo_app_suspended := registry_with({
	"velo-app": {"kind": "application", "organisation": "velo-startup", "status": "suspended"},
	"velo-startup": {"kind": "private-partner", "organisation": "velo-startup", "status": "active"},
})

test_suspended_org_denies_every_call_of_its_applications if {
	every rpc_name, _ in consent_classes {
		d := rpc.decision with input as consent_call(rpc_name, mobility_app, agreement)
			with data.tdg.registry as velo_startup_suspended
		denied_because(d, "party 'velo-startup' is suspended")
	}
	every rpc_name in read_rpcs {
		d := rpc.decision with input as call(rpc_name, mobility_app, {}) with data.tdg.registry as velo_startup_suspended
		d.reasons == ["party 'velo-startup' is suspended"]
	}
}

test_suspended_party_is_denied if {
	d := rpc.decision with input as consent_call("GetAgreement", mobility_app, agreement)
		with data.tdg.registry as velo_app_suspended
	d.allow == false
	d.reasons == ["party 'velo-app' is suspended"]
}

test_suspension_denies_a_granted_call_with_the_suspension_only if {
	# the officer of the suspended org holds the permission: the only reason is the suspension
	d := rpc.decision with input as consent_call("RequestAccess", velo_officer, agreement)
		with data.tdg.registry as velo_startup_suspended
	d.reasons == ["party 'velo-startup' is suspended"]
}

test_suspended_admin_is_denied if {
	d := rpc.decision with input as call("RegisterDataset", admin, bike_counters)
		with data.tdg.registry as registry_with({"platform-ops": {"status": "suspended"}})
	d.reasons == ["party 'platform-ops' is suspended"]
}

test_suspension_and_refusal_both_reasoned if {
	d := rpc.decision with input as consent_call("RegisterParty", mobility_app, {})
		with data.tdg.registry as registry_with({
			"velo-app": {"status": "suspended"},
			"velo-startup": {"status": "suspended"},
		})
	d.reasons == [
		"party 'velo-app' is suspended",
		"party 'velo-startup' is suspended",
		"role platform-admin required to call RegisterParty",
	]
}

test_unauthenticated_with_suspended_org_gives_both_reasons if {
	d := rpc.decision with input as call("GetDataset", {"party": "", "org": "velo-startup"}, {})
		with data.tdg.registry as velo_startup_suspended
	d.reasons == ["party 'velo-startup' is suspended", "unauthenticated caller"]
}

test_active_and_unlisted_parties_are_not_suspended if {
	# a suspended party elsewhere in the registry does not concern this caller
	allowed(rpc.decision) with input as consent_call("GetAgreement", lyon_officer, agreement)
		with data.tdg.registry as velo_app_suspended
	allowed(rpc.decision) with input as consent_call("ListPurposes", other_app, {})
		with data.tdg.registry as velo_startup_suspended
	allowed(rpc.decision) with input as consent_call("GetAgreement", mobility_app, agreement)
		with data.tdg.registry as registry_with({"velo-app": {"status": "active"}, "velo-startup": {"status": "active"}})
}

test_empty_org_never_matches_a_suspended_entry if {
	allowed(rpc.decision) with input as consent_call("ListPurposes", alice, {})
		with data.tdg.registry as registry_with({"": {"status": "suspended"}})
}

test_without_bundle_nobody_is_suspended if {
	# no data.tdg.registry at all: the consent service was never reached
	allowed(decide(consent_call("RequestAccess", mobility_app, agreement)))
	allowed(decide(call("RegisterDataset", lyon_officer, bike_counters)))
}

test_malformed_bundle_suspends_nobody if {
	allowed(rpc.decision) with input as consent_call("ListPurposes", mobility_app, {})
		with data.tdg.registry as {"parties": ["velo-app"]}
	allowed(rpc.decision) with input as consent_call("ListPurposes", mobility_app, {})
		with data.tdg.registry as "not an object"
}

#
# Ingest service
#

ingest := "tdg.ingest.v1.IngestService"

# Every ingest method and its class, as the contract's table lists them.
ingest_classes := {
	"Publish": "ingest.publish",
	"Status": "ingest.monitor",
	"GetDeliveryIndicators": "ingest.monitor",
	"ListRejects": "ingest.manage",
	"GetReject": "ingest.manage",
	"ReplayRejects": "ingest.manage",
	"CompactTable": "ingest.manage",
}

ingest_rpcs_of(class) := [rpc_name | some rpc_name, c in ingest_classes; c == class]

# The resource the ingest service sends: the dataset, and the producer asked about (or "").
counters_of(producer) := {
	"dataset": {"id": "metropole-lyon.bike-counters", "publisher": "metropole-lyon", "status": "published"},
	"producer": producer,
}

sensor_co := {"party": "sensor-co", "org": "sensor-co", "roles": []}

# An application of sensor-co.
sensor_gateway := {"party": "sensor-gateway", "org": "sensor-co", "roles": []}

ingest_call(rpc_name, subject, resource) := {
	"method": sprintf("/%s/%s", [ingest, rpc_name]),
	"service": ingest,
	"rpc": rpc_name,
	"subject": subject,
	"resource": resource,
}

ingest_allowed_for_all(class, subjects, resource) if {
	every rpc_name in ingest_rpcs_of(class) {
		every subject in subjects {
			allowed(decide(ingest_call(rpc_name, subject, resource)))
		}
	}
}

ingest_denied_for_all(class, subjects, resource) if {
	every rpc_name in ingest_rpcs_of(class) {
		every subject in subjects {
			d := decide(ingest_call(rpc_name, subject, resource))
			d.allow == false
			count(d.reasons) > 0
		}
	}
}

test_every_ingest_method_has_its_class if {
	every rpc_name, class in ingest_classes {
		rpc.permissions[sprintf("/%s/%s", [ingest, rpc_name])] == class
	}
	ingest_methods := {method | some method, _ in rpc.permissions; startswith(method, sprintf("/%s/", [ingest]))}
	count(ingest_methods) == count(ingest_classes)
}

test_unknown_ingest_method_is_denied if {
	d := decide(ingest_call("DropTable", admin, counters_of("")))
	d.reasons == ["method /tdg.ingest.v1.IngestService/DropTable is not governed by any rule"]
}

# ingest.publish

test_any_authenticated_party_publishes if {
	# whether it may write to the dataset is tdg.write's decision, per dataset
	ingest_allowed_for_all("ingest.publish", [sensor_co, sensor_gateway, lyon_intern, admin, {"party": "bare-app"}], {})
}

test_unauthenticated_caller_cannot_publish if {
	d := decide(ingest_call("Publish", {"party": "", "org": "sensor-co", "roles": []}, {}))
	d.reasons == ["unauthenticated caller"]
}

test_suspended_producer_cannot_publish if {
	suspended := registry_with({
		"sensor-gateway": {"kind": "application", "organisation": "sensor-co", "status": "active"},
		"sensor-co": {"kind": "private-partner", "organisation": "sensor-co", "status": "suspended"},
	})
	every subject in [sensor_co, sensor_gateway] {
		d := rpc.decision with input as ingest_call("Publish", subject, {}) with data.tdg.registry as suspended
		d.reasons == ["party 'sensor-co' is suspended"]
	}
}

# ingest.monitor

test_dataset_monitored_by_admin_and_publishers_officer if {
	ingest_allowed_for_all("ingest.monitor", [admin, lyon_officer], counters_of(""))
	ingest_allowed_for_all("ingest.monitor", [admin, lyon_officer], counters_of("sensor-co"))
}

test_dataset_monitoring_refused_to_others if {
	ingest_denied_for_all("ingest.monitor", [grenoble_officer, lyon_intern, sensor_co, registrar], counters_of(""))
	d := decide(ingest_call("Status", grenoble_officer, counters_of("")))
	d.reasons == ["role data-officer of publisher 'metropole-lyon' (or platform-admin) required to call Status on dataset 'metropole-lyon.bike-counters'"]
}

test_producer_sees_its_own_delivery_indicators if {
	# the party itself, or a party of the producing organisation
	every subject in [sensor_co, sensor_gateway] {
		allowed(decide(ingest_call("GetDeliveryIndicators", subject, counters_of("sensor-co"))))
	}
	allowed(decide(ingest_call("GetDeliveryIndicators", sensor_gateway, counters_of("sensor-gateway"))))
}

test_producer_does_not_see_others_delivery_indicators if {
	d := decide(ingest_call("GetDeliveryIndicators", sensor_co, counters_of("air-co")))
	d.reasons == ["GetDeliveryIndicators on dataset 'metropole-lyon.bike-counters' requires a data-officer of publisher 'metropole-lyon', the producer 'air-co' (or a party of that organisation), or platform-admin"]
	not decide(ingest_call("GetDeliveryIndicators", sensor_gateway, counters_of("sensor-co-2"))).allow
}

test_producer_needs_the_producer_named if {
	# every producer of the dataset: the publisher's side only
	d := decide(ingest_call("GetDeliveryIndicators", sensor_co, counters_of("")))
	d.reasons == ["GetDeliveryIndicators on dataset 'metropole-lyon.bike-counters' requires a data-officer of publisher 'metropole-lyon', the producer (none) (or a party of that organisation), or platform-admin"]
	not decide(ingest_call("GetDeliveryIndicators", {"party": "", "org": "", "roles": []}, counters_of(""))).allow
}

test_producer_does_not_see_the_dataset_status if {
	# Status shows the whole dataset, not one producer's delivery
	d := decide(ingest_call("Status", sensor_co, counters_of("sensor-co")))
	d.reasons == ["role data-officer of publisher 'metropole-lyon' (or platform-admin) required to call Status on dataset 'metropole-lyon.bike-counters'"]
}

test_status_of_every_dataset_of_the_officers_organisation if {
	# Status without a dataset id: the service names the caller's organisation as the publisher
	allowed(decide(ingest_call("Status", lyon_officer, {"dataset": {"publisher": "metropole-lyon"}})))
	d := decide(ingest_call("Status", lyon_intern, {"dataset": {"publisher": "metropole-lyon"}}))
	d.reasons == ["role data-officer of publisher 'metropole-lyon' (or platform-admin) required to call Status on the datasets of 'metropole-lyon'"]
}

test_status_without_publisher_only_admin if {
	allowed(decide(ingest_call("Status", admin, {"dataset": {"publisher": ""}})))
	officer := object.union(lyon_officer, {"org": ""})
	d := decide(ingest_call("Status", officer, {"dataset": {"publisher": ""}}))
	d.reasons == ["role data-officer of publisher (none) (or platform-admin) required to call Status on a dataset"]
	not decide(ingest_call("Status", lyon_officer, {})).allow
}

test_malformed_ingest_resource_grants_nothing_but_admin if {
	every resource in [{"dataset": "metropole-lyon"}, {"dataset": {"publisher": 7}}, {"publisher": "metropole-lyon"}] {
		not decide(ingest_call("ListRejects", lyon_officer, resource)).allow
		allowed(decide(ingest_call("ListRejects", admin, resource)))
	}
	not decide(ingest_call("GetDeliveryIndicators", sensor_co, {"producer": 7})).allow
}

# ingest.manage

test_rejects_and_tables_managed_by_admin_and_publishers_officer if {
	ingest_allowed_for_all("ingest.manage", [admin, lyon_officer], counters_of(""))
}

test_rejects_and_tables_refused_to_others if {
	# the producer of a reject does not manage the dead-letter topic
	ingest_denied_for_all("ingest.manage", [grenoble_officer, lyon_intern, sensor_co, registrar, query_service], counters_of("sensor-co"))
	every rpc_name in ingest_rpcs_of("ingest.manage") {
		d := decide(ingest_call(rpc_name, sensor_co, counters_of("sensor-co")))
		d.reasons == [sprintf(
			"role data-officer of publisher 'metropole-lyon' (or platform-admin) required to call %s on dataset 'metropole-lyon.bike-counters'",
			[rpc_name],
		)]
	}
}

# Suspension

test_suspended_callers_are_denied_every_ingest_method if {
	suspended := registry_with({
		"metropole-lyon": {"kind": "municipality", "organisation": "metropole-lyon", "status": "suspended"},
		"platform-ops": {"status": "suspended"},
	})
	every rpc_name, _ in ingest_classes {
		every subject in [lyon_officer, admin] {
			d := rpc.decision with input as ingest_call(rpc_name, subject, counters_of("")) with data.tdg.registry as suspended
			d.allow == false
			count({r | some r in d.reasons; startswith(r, "party '")}) == 1
		}
	}
}

test_suspended_producer_does_not_see_its_delivery if {
	d := rpc.decision with input as ingest_call("GetDeliveryIndicators", sensor_gateway, counters_of("sensor-co"))
		with data.tdg.registry as registry_with({"sensor-gateway": {"status": "suspended"}})
	d.reasons == ["party 'sensor-gateway' is suspended"]
}

#
# Query service (gRPC) and its Arrow Flight server
#

query := "tdg.query.v1.QueryService"

flight := "arrow.flight.protocol.FlightService"

# Every query method and its class, as the contract's table lists them.
query_classes := {
	"Query": "query.read",
	"ListReadable": "query.read",
	"SearchAudit": "query.audit",
}

# The Flight methods the query service's Flight server asks about, and their class.
flight_classes := {
	"GetFlightInfo": "query.read",
	"GetSchema": "query.read",
	"DoGet": "query.read",
	"ListFlights": "query.read",
}

query_call(rpc_name, subject, resource) := {
	"method": sprintf("/%s/%s", [query, rpc_name]),
	"service": query,
	"rpc": rpc_name,
	"subject": subject,
	"resource": resource,
}

flight_call(rpc_name, subject) := {
	"method": sprintf("/%s/%s", [flight, rpc_name]),
	"service": flight,
	"rpc": rpc_name,
	"subject": subject,
	"resource": {},
}

# The resource SearchAudit sends: the dataset searched (id and publisher), or none.
audit_of(dataset_id, publisher) := {"dataset": {"id": dataset_id, "publisher": publisher}}

lyon_audit := audit_of("metropole-lyon.bike-counters", "metropole-lyon")

test_every_query_method_has_its_class if {
	every rpc_name, class in query_classes {
		rpc.permissions[sprintf("/%s/%s", [query, rpc_name])] == class
	}
	query_methods := {method | some method, _ in rpc.permissions; startswith(method, sprintf("/%s/", [query]))}
	count(query_methods) == count(query_classes)
}

test_every_flight_method_has_its_class if {
	every rpc_name, class in flight_classes {
		rpc.permissions[sprintf("/%s/%s", [flight, rpc_name])] == class
	}
	flight_methods := {method | some method, _ in rpc.permissions; startswith(method, sprintf("/%s/", [flight]))}
	count(flight_methods) == count(flight_classes)
}

test_unknown_query_method_is_denied if {
	d := decide(query_call("DropAudit", admin, {}))
	d.reasons == ["method /tdg.query.v1.QueryService/DropAudit is not governed by any rule"]
}

test_flight_methods_that_write_or_act_are_not_governed if {
	every rpc_name in ["DoPut", "DoExchange", "DoAction", "ListActions", "Handshake", "PollFlightInfo"] {
		d := decide(flight_call(rpc_name, admin))
		d.reasons == [sprintf("method /%s/%s is not governed by any rule", [flight, rpc_name])]
	}
}

# query.read

test_any_authenticated_party_queries if {
	# what it may read is tdg.read's decision, asked by the service per query
	every rpc_name in ["Query", "ListReadable"] {
		every subject in [mobility_app, other_app, lyon_intern, alice, admin, query_service, {"party": "bare-app"}] {
			allowed(decide(query_call(rpc_name, subject, {})))
			allowed(decide(query_call(rpc_name, subject, bike_counters)))
		}
	}
}

test_any_authenticated_party_reads_over_flight if {
	every rpc_name, _ in flight_classes {
		every subject in [mobility_app, lyon_officer, admin, {"party": "bare-app"}] {
			allowed(decide(flight_call(rpc_name, subject)))
		}
	}
}

test_unauthenticated_caller_cannot_query if {
	every rpc_name in ["Query", "ListReadable"] {
		d := decide(query_call(rpc_name, {"party": "", "org": "velo-startup", "roles": [roles.platform_admin]}, {}))
		d.reasons == ["unauthenticated caller"]
	}
	every rpc_name, _ in flight_classes {
		decide(flight_call(rpc_name, {"org": "velo-startup", "roles": []})).reasons == ["unauthenticated caller"]
	}
}

test_suspended_application_cannot_query if {
	d := rpc.decision with input as query_call("Query", mobility_app, {}) with data.tdg.registry as velo_startup_suspended
	d.reasons == ["party 'velo-startup' is suspended"]
	f := rpc.decision with input as flight_call("DoGet", mobility_app) with data.tdg.registry as velo_startup_suspended
	f.reasons == ["party 'velo-startup' is suspended"]
}

# query.audit

test_admin_searches_any_audit if {
	every resource in [{}, lyon_audit, audit_of("grenoble-alpes.parking", "grenoble-alpes"), audit_of("", "")] {
		allowed(decide(query_call("SearchAudit", admin, resource)))
	}
}

test_officer_searches_the_audit_of_its_own_dataset if {
	allowed(decide(query_call("SearchAudit", lyon_officer, lyon_audit)))
	allowed(decide(query_call("SearchAudit", grenoble_officer, audit_of("grenoble-alpes.parking", "grenoble-alpes"))))
}

test_officer_of_another_publisher_is_refused if {
	d := decide(query_call("SearchAudit", grenoble_officer, lyon_audit))
	d.reasons == ["role data-officer of publisher 'metropole-lyon' (or platform-admin) required to call SearchAudit on dataset 'metropole-lyon.bike-counters'"]
}

test_officer_without_a_dataset_is_told_to_name_one if {
	every resource in [{}, audit_of("", ""), {"dataset": {"publisher": "metropole-lyon"}}, audit_of("", "metropole-lyon")] {
		d := decide(query_call("SearchAudit", lyon_officer, resource))
		d.reasons == ["SearchAudit without a dataset requires platform-admin: as data-officer, name one of the datasets of 'metropole-lyon'"]
	}
	no_org := object.union(lyon_officer, {"org": ""})
	decide(query_call("SearchAudit", no_org, {})).reasons == ["SearchAudit without a dataset requires platform-admin: as data-officer, name one of the datasets of (none)"]
}

test_others_are_refused_the_audit if {
	every subject in [mobility_app, lyon_intern, registrar, query_service, alice] {
		d := decide(query_call("SearchAudit", subject, lyon_audit))
		d.reasons == ["role data-officer of publisher 'metropole-lyon' (or platform-admin) required to call SearchAudit on dataset 'metropole-lyon.bike-counters'"]
		e := decide(query_call("SearchAudit", subject, {}))
		e.reasons == ["SearchAudit without a dataset requires platform-admin (or a data-officer naming a dataset of its organisation)"]
	}
}

test_member_of_the_publisher_needs_the_officer_role if {
	not decide(query_call("SearchAudit", lyon_intern, lyon_audit)).allow
}

test_audit_of_a_dataset_without_publisher_only_admin if {
	# an unknown dataset (no publisher found): an officer without org cannot match it
	no_org := object.union(lyon_officer, {"org": ""})
	d := decide(query_call("SearchAudit", no_org, audit_of("metropole-lyon.gone", "")))
	d.reasons == ["role data-officer of publisher (none) (or platform-admin) required to call SearchAudit on dataset 'metropole-lyon.gone'"]
	allowed(decide(query_call("SearchAudit", admin, audit_of("metropole-lyon.gone", ""))))
}

test_malformed_audit_resource_grants_nothing_but_admin if {
	every resource in [{"dataset": "metropole-lyon.bike-counters"}, {"dataset": {"id": 7, "publisher": "metropole-lyon"}}, {"dataset": {"id": "metropole-lyon.bike-counters", "publisher": 7}}, bike_counters] {
		not decide(query_call("SearchAudit", lyon_officer, resource)).allow
		allowed(decide(query_call("SearchAudit", admin, resource)))
	}
}

test_suspended_officer_cannot_search_the_audit if {
	suspended := registry_with({"metropole-lyon": {"kind": "municipality", "organisation": "metropole-lyon", "status": "suspended"}})
	d := rpc.decision with input as query_call("SearchAudit", lyon_officer, lyon_audit) with data.tdg.registry as suspended
	d.reasons == ["party 'metropole-lyon' is suspended"]
}
