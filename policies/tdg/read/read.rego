# METADATA
# title: Read authorization (the query decision)
# description: |
#   May this party run this query on this dataset, and what does it see. The query service posts
#   {subject, dataset, request} to /v1/data/tdg/read/decision and applies the answer: a treatment
#   per column (clear, null, hash, generalise, deny), row filters, the consent filter and the
#   aggregate-only constraint. See policies/README.md for the contract.
#
#   Three ways to read: the publisher's own organisation (everything clear); an active read
#   agreement valid now covering the purpose (its columns, masks, territory filter, legal basis);
#   without one, an `open` dataset (public clear, personal and sensitive null, internal deny).
package tdg.read

import data.tdg.lib.registry

# METADATA
# description: |
#   The answer; always this shape. On deny every column is `deny`, with no agreement, no row
#   filter, no consent filter and no aggregate constraint.
decision := {
	"allow": allow,
	"reasons": sort(reasons),
	"agreement_id": granted.agreement_id,
	"purpose": purpose,
	"columns": granted.columns,
	"row_filters": granted.row_filters,
	"consent": granted.consent,
	"aggregate_only": granted.aggregate_only,
	"min_group_size": granted.min_group_size,
}

default allow := false

allow if {
	permitted
	count(problems) == 0
}

# The positive conditions of a read (each has a problem below when it fails).
permitted if {
	authenticated
	count(suspended) == 0
	dataset_id != ""
	purpose_known
	mode != "none"
	publishable
}

publishable if mode == "publisher"

publishable if dataset_status == "published"

# What the answer grants: what was computed when allowed, nothing when denied.
granted := {
	"agreement_id": agreement_id,
	"columns": treatments,
	"row_filters": row_filters,
	"consent": consent,
	"aggregate_only": aggregate_only,
	"min_group_size": min_group_size,
} if {
	allow
} else := {
	"agreement_id": "",
	"columns": {name: deny | some name, _ in treatments},
	"row_filters": [],
	"consent": no_consent,
	"aggregate_only": false,
	"min_group_size": 0,
}

#
# Input
#

authenticated if {
	is_string(input.subject.party)
	input.subject.party != ""
}

default subject_org := ""

subject_org := input.subject.org if is_string(input.subject.org)

default suspended := set()

suspended := registry.suspended_ids(input.subject)

default dataset_id := ""

dataset_id := input.dataset.id if is_string(input.dataset.id)

default dataset_publisher := ""

dataset_publisher := input.dataset.publisher if is_string(input.dataset.publisher)

default dataset_status := ""

dataset_status := input.dataset.status if is_string(input.dataset.status)

default access_level := ""

access_level := input.dataset.access_level if is_string(input.dataset.access_level)

default subject_column := ""

subject_column := input.dataset.subject_column if is_string(input.dataset.subject_column)

# The names of the dataset's columns.
column_names := {column.name | some column in input.dataset.columns}

# A column entry without a name, or a name listed twice: such a dataset is refused.
malformed_columns if count(column_names) != count(input.dataset.columns)

malformed_columns if "" in column_names

# (concat is undefined unless every name is a string; it checks them all natively, in one call.)
malformed_columns if not concat(",", column_names)

default purpose := ""

purpose := input.request.purpose if is_string(input.request.purpose)

purpose_known if registry.known_purpose(purpose)

# The request's lists of column names that are present but not arrays of strings (refused).
malformed_lists contains key if {
	some key in list_fields
	value := request[key]
	not names_array(value)
}

list_fields := ["columns", "filter_columns", "group_by", "order_by"]

default request := {}

request := input.request if is_object(input.request)

# A request list of column names ([] when absent or malformed).
names(key) := request[key] if {
	not key in malformed_lists
} else := []

requested := names("columns")

# The request's aggregates as {function, column} ("" when the column is absent).
aggregates := [{"function": lower(aggregate.function), "column": object.get(aggregate, "column", "")} |
	some aggregate in input.request.aggregates
	is_string(aggregate.function)
]

# The columns the request aggregates (count of "" or "*" needs none).
aggregated contains aggregate.column if {
	some aggregate in aggregates
	not aggregate.column in {"", "*"}
}

#
# How the caller reads: its own dataset, an agreement, the dataset being open, or not at all
#

# The caller's organisation publishes the dataset.
own_dataset if {
	dataset_publisher != ""
	subject_org == dataset_publisher
}

# The ids of the read agreements held by the caller's party or organisation on the dataset (any
# state). Ids only: the agreements stay in the store, and only the fields read are converted.
default held_ids := set()

held_ids := registry.held_ids(input.subject, dataset_id, "read")

# Those usable now for the request's purpose.
usable_ids := registry.covering_ids(registry.usable_ids(held_ids), purpose)

mode := "publisher" if {
	own_dataset
} else := "agreement" if {
	count(usable_ids) > 0
} else := "open" if {
	access_level == "open"
} else := "none"

# The agreement the read rests on: the smallest usable id ("" without one).
default agreement_id := ""

agreement_id := min(usable_ids) if mode == "agreement"

default agreement := {}

agreement := registry.agreement(agreement_id) if mode == "agreement"

#
# Column treatments
#

clear := {"treatment": "clear"}

nulled := {"treatment": "null"}

deny := {"treatment": "deny"}

# The treatment of every column of the dataset: its override (under an agreement: deny outside the
# agreement's columns, else its mask), else the treatment of its sensitivity in this mode (an
# unknown or missing sensitivity counts as `sensitive`). One pass over the columns: a decision must
# stay well under a millisecond. With malformed columns (refused) every named column is denied.
treatments := {column.name: treatment |
	some column in input.dataset.columns
	treatment := object.get(
		overrides, column.name,
		object.get(by_sensitivity, object.get(column, "sensitivity", ""), by_sensitivity.sensitive),
	)
} if {
	not malformed_columns
} else := {name: deny | some name in column_names; is_string(name); name != ""}

# METADATA
# description: |
#   How each sensitivity is treated in each mode. Under an agreement, `personal` and `sensitive`
#   columns without a mask get `settings.default_masks`.
by_sensitivity := {"public": clear, "internal": clear, "personal": clear, "sensitive": clear} if {
	mode == "publisher"
} else := {
	"public": clear,
	"internal": clear,
	"personal": default_treatment("personal"),
	"sensitive": default_treatment("sensitive"),
} if {
	mode == "agreement"
} else := {"public": clear, "internal": deny, "personal": nulled, "sensitive": nulled} if {
	mode == "open"
} else := {"public": deny, "internal": deny, "personal": deny, "sensitive": deny}

# Per column, under an agreement: deny outside its columns, else its mask. Empty otherwise.
default overrides := {}

overrides := object.union(
	{name: mask_treatment(mask) | some name, mask in agreement_masks},
	{name: deny | some name in ungranted},
) if mode == "agreement"

# The dataset's columns the agreement does not grant. `columns: []` grants every column; a
# missing or malformed list grants none.
ungranted := set() if {
	is_array(agreement.columns)
	count(agreement.columns) == 0
} else := column_names - {name | some name in agreement.columns}

default agreement_masks := {}

agreement_masks := agreement.masks if is_object(agreement.masks)

default salt := ""

salt := agreement.salt if is_string(agreement.salt)

# A mask as a treatment; a malformed one (unknown method, hash without salt, generalise without
# parameters) denies the column.
mask_treatment(mask) := clear if {
	mask.method == "clear"
} else := nulled if {
	mask.method == "null"
} else := {"treatment": "hash", "salt": salt} if {
	mask.method == "hash"
	salt != ""
} else := {"treatment": "generalise", "generalise": mask.generalise} if {
	mask.method == "generalise"
	is_object(mask.generalise)
	count(mask.generalise) > 0
} else := deny

# `settings.default_masks[sensitivity]`; null when the settings name none.
default_treatment(level) := mask_treatment({"method": registry.default_masks[level]}) if {
	is_string(registry.default_masks[level])
} else := nulled

#
# Row filters, consent, aggregate-only (under an agreement only)
#

territory_filter := agreement.territory_filter if {
	mode == "agreement"
	agreement.territory_filter != null
}

default row_filters := []

row_filters := [{"column": territory_filter.column, "op": "in", "values": territory_filter.codes}] if {
	is_string(territory_filter.column)
	territory_filter.column != ""
	is_array(territory_filter.codes)
}

no_consent := {"required": false, "purpose": "", "subject_column": ""}

consent_required if {
	mode == "agreement"
	agreement.legal_basis == "consent"
}

consent := {"required": true, "purpose": purpose, "subject_column": subject_column} if {
	consent_required
} else := no_consent

default aggregate_only := false

aggregate_only if {
	mode == "agreement"
	agreement.aggregate_only == true
}

min_group_size := agreement.min_group_size if {
	aggregate_only
	is_number(agreement.min_group_size)
	agreement.min_group_size > 0
} else := registry.default_min_group_size if {
	aggregate_only
} else := 0

#
# Reasons: why the read is refused. Empty when allowed.
#

reasons contains reason if some reason in problems

# A refusal without a specific problem still says why.
reasons contains "read refused" if {
	not allow
	count(problems) == 0
}

problems contains "unauthenticated caller" if not authenticated

problems contains sprintf("party '%s' is suspended", [id]) if some id in suspended

problems contains "the request names no dataset" if dataset_id == ""

problems contains sprintf("dataset '%s' has a column without a name or a column name listed twice", [dataset_id]) if {
	malformed_columns
}

# Purpose

problems contains "the request names no purpose" if purpose == ""

problems contains sprintf("purpose '%s' is not a known purpose", [purpose]) if {
	purpose != ""
	not purpose_known
}

problems contains "the consent registry is not loaded" if not registry.loaded

# The dataset's status (the publisher also reads its drafts and deprecated datasets)

problems contains sprintf("dataset '%s' is deprecated", [dataset_id]) if {
	not own_dataset
	dataset_status == "deprecated"
}

problems contains sprintf("dataset '%s' is not published (status '%s')", [dataset_id, dataset_status]) if {
	not own_dataset
	not dataset_status in {"published", "deprecated"}
}

# No way to read: why no agreement applies

problems contains registry.missing(input.subject, dataset_id, "read") if {
	mode == "none"
	authenticated
	dataset_id != ""
	count(held_ids) == 0
}

problems contains reason if {
	mode == "none"
	authenticated
	some id in held_ids
	some reason in registry.refusals(id, registry.agreement(id))
}

problems contains reason if {
	mode == "none"
	authenticated
	purpose != ""
	some id in held_ids
	reason := registry.purpose_refusal(id, registry.agreement(id), purpose)
}

problems contains sprintf("dataset '%s' is %s: reading it requires an agreement", [dataset_id, access_level]) if {
	authenticated
	dataset_id != ""
	mode == "none"
	access_level != ""
}

problems contains sprintf("dataset '%s' has no access level: reading it requires an agreement", [dataset_id]) if {
	authenticated
	dataset_id != ""
	mode == "none"
	access_level == ""
}

# The agreement's own constraints

problems contains sprintf("agreement '%s' has a malformed territory filter", [agreement_id]) if {
	_ = territory_filter
	count(row_filters) == 0
}

problems contains sprintf("territory filter column '%s' of agreement '%s' is not a column of dataset '%s'", [column, agreement_id, dataset_id]) if {
	some row_filter in row_filters
	column := row_filter.column
	not column in column_names
}

problems contains sprintf("agreement '%s' rests on consent, but dataset '%s' names no subject column", [agreement_id, dataset_id]) if {
	consent_required
	subject_column == ""
}

problems contains sprintf("subject column '%s' is not a column of dataset '%s'", [subject_column, dataset_id]) if {
	consent_required
	subject_column != ""
	not subject_column in column_names
}

# The request

problems contains sprintf("request.%s must be an array of column names", [key]) if some key in malformed_lists

problems contains "request.aggregates must be an array of {function, column}" if {
	value := input.request.aggregates
	not aggregates_array(value)
}

problems contains sprintf("column '%s' is not a column of dataset '%s'", [name, dataset_id]) if {
	mode != "none"
	some name in requested
	not treatments[name]
}

problems contains sprintf("column '%s' is not granted", [name]) if {
	mode != "none"
	some name in requested
	treatments[name] == deny
}

# Filtering, grouping, ordering and aggregating need clear values.
problems contains sprintf("column '%s' in %s is not a column of dataset '%s'", [name, usage, dataset_id]) if {
	mode != "none"
	some [usage, name] in used_columns
	not treatments[name]
}

problems contains sprintf("column '%s' in %s must be clear, but its treatment is %s", [name, usage, treatment.treatment]) if {
	mode != "none"
	some [usage, name] in used_columns
	treatment := treatments[name]
	treatment != clear
}

problems contains sprintf("aggregate %s needs a column", [aggregate.function]) if {
	some aggregate in aggregates
	aggregate.column in {"", "*"}
	aggregate.function != "count"
}

# The columns the request filters, groups, orders or aggregates on, as [usage, name] pairs.
used_columns contains [usage, name] if {
	some usage in ["filter_columns", "group_by", "order_by"]
	some name in names(usage)
}

used_columns contains ["aggregates", name] if some name in aggregated

# Aggregate-only access

problems contains sprintf("access to dataset '%s' is aggregate-only: the request must aggregate", [dataset_id]) if {
	aggregate_only
	count(aggregates) == 0
}

problems contains sprintf("column '%s' is neither grouped nor aggregated, and access to dataset '%s' is aggregate-only", [name, dataset_id]) if {
	aggregate_only
	some name in requested
	not name in names("group_by")
	not name in aggregated
}

# (concat is undefined unless every element is a string: one native call checks them all.)
names_array(value) if {
	is_array(value)
	concat(",", value)
}

aggregates_array(value) if {
	is_array(value)
	every aggregate in value {
		is_string(aggregate.function)
		is_string(object.get(aggregate, "column", ""))
	}
}
