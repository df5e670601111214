# METADATA
# title: Write authorization
# description: |
#   May this party write records to this dataset now. The ingest path posts
#   {subject: {party, org, roles}, dataset: {id, publisher, status}} to /v1/data/tdg/write/decision.
#   The publisher writes its own datasets; anyone else needs an active write agreement (of its party
#   or of its organisation) valid now. The organisation is the registry's when it lists the party
#   (records from Kafka carry no trustworthy one). See policies/README.md for the contract.
package tdg.write

import data.tdg.lib.registry

# METADATA
# description: The answer; always an object, on allow and on deny.
decision := {
	"allow": allow,
	"reasons": sort(reasons),
	"agreement_id": agreement_id,
	"commitments": commitments,
}

default allow := false

allow if {
	permitted
	count(problems) == 0
}

# The positive conditions of a write (each has a problem below when it fails).
permitted if {
	authenticated
	count(suspended) == 0
	dataset_id != ""
	dataset_status == "published"
	writer
}

writer if own_dataset

writer if _ = usable_id

#
# Input
#

authenticated if subject_party != ""

default subject_party := ""

subject_party := input.subject.party if is_string(input.subject.party)

# The writer's organisation. A record read from Kafka names only its producer's party, and a
# header could claim any organisation: so the registry's organisation of the party, when the
# registry lists the party, else the one given (a verified token's), else "".
default subject_org := ""

subject_org := org if {
	org := registry.organisation(subject_party)
} else := org if {
	org := input.subject.org
	is_string(org)
}

# The writer as the registry lookups see it: its party and the organisation above.
subject := {"party": subject_party, "org": subject_org}

default dataset_id := ""

dataset_id := input.dataset.id if is_string(input.dataset.id)

default dataset_publisher := ""

dataset_publisher := input.dataset.publisher if is_string(input.dataset.publisher)

default dataset_status := ""

dataset_status := input.dataset.status if is_string(input.dataset.status)

default suspended := set()

suspended := registry.suspended_ids(subject)

# The caller's organisation publishes the dataset.
own_dataset if {
	dataset_publisher != ""
	subject_org == dataset_publisher
}

#
# The write agreement
#

# The agreement the write would rest on: the smallest id among the write agreements held by the
# caller's party or organisation on the dataset that are usable now (active, valid now); undefined
# without one. (Only ids: the agreements stay in the store.)
usable_id := registry.first_usable(subject, dataset_id, "write")

agreement := registry.agreement(usable_id)

# All the write agreements they hold on the dataset (any state): only to say why none is usable.
default held_ids := set()

held_ids := registry.held_ids(subject, dataset_id, "write")

# The agreement named in the answer: none for the publisher or on deny.
default agreement_id := ""

agreement_id := usable_id if {
	allow
	not own_dataset
}

default commitments := {}

commitments := object.get(agreement, "commitments", {}) if {
	allow
	not own_dataset
}

#
# Reasons: why the write is refused. Empty when allowed.
#

reasons contains reason if some reason in problems

# A refusal without a specific problem still says why.
reasons contains "write refused" if {
	not allow
	count(problems) == 0
}

problems contains "unauthenticated caller" if not authenticated

problems contains sprintf("party '%s' is suspended", [id]) if some id in suspended

problems contains "the request names no dataset" if dataset_id == ""

problems contains sprintf("dataset '%s' is deprecated", [dataset_id]) if dataset_status == "deprecated"

problems contains sprintf("dataset '%s' is not published (status '%s')", [dataset_id, dataset_status]) if {
	not dataset_status in {"published", "deprecated"}
}

problems contains registry.missing(subject, dataset_id, "write") if {
	authenticated
	dataset_id != ""
	not own_dataset
	count(held_ids) == 0
}

problems contains reason if {
	authenticated
	not own_dataset
	not writer
	some id in held_ids
	some reason in registry.refusals(id, registry.agreement(id))
}
