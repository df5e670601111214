# METADATA
# title: Registry
# description: |
#   Lookups in the consent registry bundle (`data.tdg.registry`, served by the consent service):
#   parties and their suspension, the registry settings, and the agreements a subject holds on a
#   dataset. Shared by tdg.rpc, tdg.write and tdg.read; the only package that reads the bundle.
#
#   Agreements are reached through `index[consumer][dataset][kind]` only, never by iterating over
#   every agreement. When the bundle is absent every lookup is empty: nobody is suspended, no
#   purpose is known, no agreement exists.
package tdg.lib.registry

# Every lookup names its path under data.tdg.registry (parties[id], index[c][d][k], agreements[id],
# settings): never the whole bundle nor a whole collection, which OPA would copy out of its store on
# each evaluation (milliseconds for 10,000 agreements).

# METADATA
# description: true when the bundle is loaded (it always carries its settings).
loaded if is_object(data.tdg.registry.settings)

default settings := {}

settings := data.tdg.registry.settings if is_object(data.tdg.registry.settings)

# METADATA
# description: A party (or organisation) by id; undefined when the registry does not list it.
party(id) := data.tdg.registry.parties[id]

# METADATA
# description: An agreement by id; undefined when the registry does not list it.
agreement(id) := data.tdg.registry.agreements[id]

# METADATA
# description: |
#   The agreement ids the index lists for `consumer` on `dataset_id`, of `kind` (both states).
listed(consumer, dataset_id, kind) := data.tdg.registry.index[consumer][dataset_id][kind]

# METADATA
# description: true when `purpose` is among `settings.purposes` (never without the bundle).
known_purpose(purpose) if {
	is_string(purpose)
	purpose != ""
	purposes := settings.purposes
	is_array(purposes)
	purpose in purposes
}

# METADATA
# description: The mask applied to a `personal` or `sensitive` column that an agreement does not mask.
default default_masks := {}

default_masks := settings.default_masks if is_object(settings.default_masks)

# METADATA
# description: |
#   The minimum group size of an aggregate-only agreement that sets none. Falls back to 10 (the
#   consent service's default) when the bundle carries no usable value.
default default_min_group_size := 10

default_min_group_size := settings.default_min_group_size if {
	is_number(settings.default_min_group_size)
	settings.default_min_group_size >= 1
}

#
# Parties
#

# METADATA
# description: |
#   The organisation the registry lists for party `id` (an organisation's is its own id); ""
#   when the registry lists the party with none; undefined when it does not list the party.
organisation(id) := org if {
	is_string(id)
	id != ""
	listed_party := data.tdg.registry.parties[id]
	is_object(listed_party)
	org := object.get(listed_party, "organisation", "")
	is_string(org)
} else := "" if {
	is_string(id)
	id != ""
	is_object(data.tdg.registry.parties[id])
}

# METADATA
# description: true when `id` names a party (or organisation) whose status is `suspended`.
suspended(id) if {
	is_string(id)
	id != ""
	party(id).status == "suspended"
}

# METADATA
# description: |
#   The ids a subject acts as: its party and its organisation (non-empty strings only).
consumers(subject) := {id |
	some key in ["party", "org"]
	id := subject[key]
	is_string(id)
	id != ""
}

# METADATA
# description: The subject's party and organisation ids that are suspended.
suspended_ids(subject) := {id |
	some id in consumers(subject)
	data.tdg.registry.parties[id].status == "suspended"
}

#
# Agreements
#

# Agreements are read from the store one field at a time (`data.tdg.registry.agreements[id].state`
# converts that field only). An agreement placed in a collection, compared, or passed to a function
# is converted whole, on every evaluation: the functions on ids below avoid that, the functions on
# agreement objects are for the (rare) refusal reasons.

# METADATA
# description: |
#   The agreements (id → agreement, any state) of `kind` ("read" or "write") on `dataset_id` held
#   by the subject's party or by its organisation (an organisation's agreement covers its
#   applications). Found through the index; entries that disagree with the index are ignored.
held(subject, dataset_id, kind) := {id: agreement(id) | some id in held_ids(subject, dataset_id, kind)}

# METADATA
# description: The ids of the agreements `held` returns.
held_ids(subject, dataset_id, kind) := {id |
	some consumer in consumers(subject)
	some id in data.tdg.registry.index[consumer][dataset_id][kind]
	candidate := data.tdg.registry.agreements[id]
	candidate.dataset == dataset_id
	candidate.kind == kind
	candidate.consumer == consumer
}

# METADATA
# description: |
#   The smallest id among the agreements `held` returns that are `usable` now and `cover`
#   `purpose`; undefined when there is none. The smallest id the index lists is tried first (a
#   consumer rarely holds several agreements on a dataset, and the oldest is usually the one in
#   force): only when it does not qualify are the others read.
first_usable_for(subject, dataset_id, kind, purpose) := id if {
	id := min({listed |
		some consumer in consumers(subject)
		some listed in data.tdg.registry.index[consumer][dataset_id][kind]
	})
	candidate := data.tdg.registry.agreements[id]
	candidate.state == "active"
	candidate.dataset == dataset_id
	candidate.kind == kind
	consumer := candidate.consumer
	consumer in consumers(subject)
	id in data.tdg.registry.index[consumer][dataset_id][kind]
	purposes := candidate.purposes
	is_array(purposes)
	purpose in purposes
	valid_now(object.get(candidate, "valid_from_ns", 0), object.get(candidate, "valid_until_ns", 0))
} else := min({id |
	some consumer in consumers(subject)
	some id in data.tdg.registry.index[consumer][dataset_id][kind]
	candidate := data.tdg.registry.agreements[id]
	candidate.state == "active"
	candidate.dataset == dataset_id
	candidate.kind == kind
	candidate.consumer == consumer
	purposes := candidate.purposes
	is_array(purposes)
	purpose in purposes
	valid_now(object.get(candidate, "valid_from_ns", 0), object.get(candidate, "valid_until_ns", 0))
})

# METADATA
# description: The same, whatever the purpose (write agreements).
first_usable(subject, dataset_id, kind) := id if {
	id := min({listed |
		some consumer in consumers(subject)
		some listed in data.tdg.registry.index[consumer][dataset_id][kind]
	})
	candidate := data.tdg.registry.agreements[id]
	candidate.state == "active"
	candidate.dataset == dataset_id
	candidate.kind == kind
	consumer := candidate.consumer
	consumer in consumers(subject)
	id in data.tdg.registry.index[consumer][dataset_id][kind]
	valid_now(object.get(candidate, "valid_from_ns", 0), object.get(candidate, "valid_until_ns", 0))
} else := min({id |
	some consumer in consumers(subject)
	some id in data.tdg.registry.index[consumer][dataset_id][kind]
	candidate := data.tdg.registry.agreements[id]
	candidate.state == "active"
	candidate.dataset == dataset_id
	candidate.kind == kind
	candidate.consumer == consumer
	valid_now(object.get(candidate, "valid_from_ns", 0), object.get(candidate, "valid_until_ns", 0))
})

# The start and end of an agreement's validity (ns since the epoch; an end of 0 means none).
valid_from(agreement) := object.get(agreement, "valid_from_ns", 0)

valid_until(agreement) := object.get(agreement, "valid_until_ns", 0)

# METADATA
# description: true when the agreement's validity has begun.
started(agreement) if {
	is_number(valid_from(agreement))
	valid_from(agreement) <= time.now_ns()
}

# METADATA
# description: true when the agreement's validity has ended.
ended(agreement) if {
	valid_until(agreement) != 0
	time.now_ns() >= valid_until(agreement)
}

ended(agreement) if not is_number(valid_until(agreement))

# METADATA
# description: true when the agreement is active and valid now.
usable(agreement) if {
	agreement.state == "active"
	valid_now(valid_from(agreement), valid_until(agreement))
}

# METADATA
# description: |
#   true when a validity period (`valid_from_ns`, `valid_until_ns`) holds now: both bounds numbers,
#   begun (`started`), and not ended (`ended`): no end (0), or an end still to come.
valid_now(valid_from_ns, valid_until_ns) if {
	is_number(valid_from_ns)
	is_number(valid_until_ns)
	valid_from_ns <= time.now_ns()
	true in [valid_until_ns == 0, time.now_ns() < valid_until_ns]
}

# METADATA
# description: true when the agreement's purposes contain `purpose`.
covers(agreement, purpose) if {
	is_array(agreement.purposes)
	purpose in agreement.purposes
}

# METADATA
# description: Why an agreement is not usable now (empty when it is).
refusals(id, agreement) := {reason | reason := state_refusal(id, agreement)} | {reason | reason := validity_refusal(id, agreement)}

state_refusal(id, agreement) := sprintf("agreement '%s' is %s", [id, state]) if {
	state := object.get(agreement, "state", "in no state")
	state != "active"
}

validity_refusal(id, agreement) := sprintf("agreement '%s' has a malformed validity period", [id]) if {
	some bound in [valid_from(agreement), valid_until(agreement)]
	not is_number(bound)
} else := sprintf("agreement '%s' is not valid until %s", [id, time.format(valid_from(agreement))]) if {
	not started(agreement)
} else := sprintf("agreement '%s' expired at %s", [id, time.format(valid_until(agreement))]) if {
	ended(agreement)
}

# METADATA
# description: Why an agreement does not cover `purpose` (undefined when it does).
purpose_refusal(id, agreement, purpose) := reason if {
	not covers(agreement, purpose)
	names := [p | some p in object.get(agreement, "purposes", []); is_string(p)]
	reason := sprintf(
		"purpose '%s' is not among the purposes of agreement '%s' (%s)",
		[purpose, id, concat(", ", sort(names))],
	)
}

# METADATA
# description: The reason given when the subject holds no agreement of `kind` on `dataset_id`.
missing(subject, dataset_id, kind) := sprintf(
	"no %s agreement for dataset '%s' held by %s",
	[kind, dataset_id, holders(subject)],
)

holders(subject) := concat(" or ", [sprintf("'%s'", [id]) | some id in sort(consumers(subject))]) if {
	count(consumers(subject)) > 0
} else := "the caller"
