# METADATA
# title: Roles
# description: |
#   The role names that tokens carry (claim `roles`, passed as `input.subject.roles`), defined once,
#   and the check every policy uses to ask whether a subject holds one.
package tdg.lib.roles

# Operates the platform: manages every publisher's datasets, sees every draft.
platform_admin := "platform-admin"

# A publisher's data officer: manages the datasets of their own organisation (`subject.org`).
data_officer := "data-officer"

# The citizens' portal: records consents and erasure requests on behalf of data subjects.
consent_registrar := "consent-registrar"

# A data subject acting for themselves; the token's `sub` (`subject.party`) is their subject id.
citizen := "citizen"

# tdg's own services (e.g. the query service reading consent subject sets).
platform_service := "platform-service"

# Every role a policy knows about.
known := {platform_admin, data_officer, consent_registrar, citizen, platform_service}

# METADATA
# description: true when `subject.roles` is an array (or set) containing `role`.
held(subject, role) if {
	granted := object.get(subject, "roles", [])
	is_collection(granted)
	role in granted
}

is_collection(x) if is_array(x)

is_collection(x) if is_set(x)
