package tdg.lib.roles_test

import data.tdg.lib.roles

test_role_names_are_the_token_claim_values if {
	roles.platform_admin == "platform-admin"
	roles.data_officer == "data-officer"
	roles.consent_registrar == "consent-registrar"
	roles.citizen == "citizen"
	roles.platform_service == "platform-service"
	roles.known == {"platform-admin", "data-officer", "consent-registrar", "citizen", "platform-service"}
}

test_new_roles_are_held_like_the_others if {
	every role in [roles.consent_registrar, roles.citizen, roles.platform_service] {
		roles.held({"roles": [role]}, role)
		not roles.held({"roles": [roles.data_officer]}, role)
	}
}

test_roles_are_distinct if {
	count(roles.known) == 5
}

test_held_when_role_listed if {
	roles.held({"roles": ["reader", roles.data_officer]}, roles.data_officer)
}

test_held_accepts_a_set if {
	roles.held({"roles": {roles.platform_admin}}, roles.platform_admin)
}

test_not_held_when_role_absent if {
	not roles.held({"roles": [roles.data_officer]}, roles.platform_admin)
}

test_not_held_when_roles_empty if {
	not roles.held({"roles": []}, roles.data_officer)
}

test_not_held_when_roles_missing if {
	not roles.held({"party": "p"}, roles.data_officer)
}

test_not_held_when_roles_is_a_string if {
	# a malformed claim must not match by substring or otherwise
	not roles.held({"roles": "data-officer"}, roles.data_officer)
}
