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
#
#   This runs on every query: see "Performance" in policies/README.md before changing it. Each
#   intermediate value is a rule evaluated once; loops bind the rules they need to local variables
#   first; the problems that only a refused read can have are worked out only for a deny.
package tdg.read

import data.tdg.lib.registry

# METADATA
# description: |
#   The answer; always this shape. On deny every column is `deny`, with no agreement, no row
#   filter, no consent filter and no aggregate constraint.
decision := {
	"allow": true,
	"reasons": [],
	"agreement_id": agreement_id,
	"purpose": purpose,
	"columns": treatments,
	"row_filters": row_filters,
	"consent": consent,
	"aggregate_only": aggregate_only,
	"min_group_size": min_group_size,
} if {
	allow
} else := {
	"allow": false,
	"reasons": sort(reasons),
	"agreement_id": "",
	"purpose": purpose,
	"columns": {name: deny | some name, _ in treatments},
	"row_filters": [],
	"consent": no_consent,
	"aggregate_only": false,
	"min_group_size": 0,
}

default allow := false

# `permitted` and no problem at all. When `permitted` holds, only the `request_problems` can arise
# (every other problem is the failure of one of its conditions), so only those are looked for.
allow if {
	permitted
	count(request_problems) == 0
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

publishable if dataset_status == "published"

publishable if mode == "publisher"

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

default request := {}

request := input.request if is_object(input.request)

list_fields := {"columns", "filter_columns", "group_by", "order_by"}

# The request's lists of column names, by field: `[]` when absent; a list present but not an array
# of strings is left out (and refused, below). (concat is undefined unless every element is a
# string: one native call checks them all.)
lists := {key: value |
	some key in list_fields
	value := object.get(fields, key, [])
	is_array(value)
	concat(",", value)
} if {
	fields := request
}

# The request's lists of column names that are present but not arrays of strings (refused).
malformed_lists := list_fields - object.keys(lists)

default requested := []

requested := lists.columns

default grouped := []

grouped := lists.group_by

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

# The agreement the read would rest on: the smallest id among the read agreements held by the
# caller's party or organisation on the dataset that are usable now for the request's purpose;
# undefined without one. (Only ids: the agreements stay in the store.)
usable_id := registry.first_usable_for(input.subject, dataset_id, "read", purpose)

# All the read agreements they hold on the dataset (any state): only to say why none is usable.
default held_ids := set()

held_ids := registry.held_ids(input.subject, dataset_id, "read")

mode := "publisher" if {
	own_dataset
} else := "agreement" if {
	_ = usable_id
} else := "open" if {
	access_level == "open"
} else := "none"

# The agreement the read rests on ("" without one).
default agreement_id := ""

agreement_id := usable_id if mode == "agreement"

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
# unknown or missing sensitivity counts as `sensitive`). One pass over the columns, the tables
# bound to local variables first (a rule named inside the loop is looked up for every column);
# the overrides, few, are put over the result. With malformed columns (refused) every named
# column is denied.
treatments := object.union(object.remove(by_column, object.keys(column_overrides)), column_overrides) if {
	not malformed_columns
	table := by_sensitivity
	fallback := table.sensitive
	by_column := {column.name: object.get(table, object.get(column, "sensitivity", ""), fallback) |
		some column in input.dataset.columns
	}
	column_overrides := object.filter(overrides, column_names)
} else := {name: deny | some name in column_names; is_string(name); name != ""}

# METADATA
# description: |
#   How each sensitivity is treated in each mode. Under an agreement, `personal` and `sensitive`
#   columns without a mask get the treatment of the method `settings.default_masks` names (null
#   when it names none).
by_sensitivity := object.union(
	{
		"public": {"treatment": "clear"},
		"internal": {"treatment": "clear"},
		"personal": {"treatment": "null"},
		"sensitive": {"treatment": "null"},
	},
	{level: object.get(methods, method, {"treatment": "deny"}) |
		some level, method in registry.default_masks
		level in {"personal", "sensitive"}
		is_string(method)
	},
) if {
	mode == "agreement"
	methods := method_treatments
} else := {
	"public": {"treatment": "clear"},
	"internal": {"treatment": "clear"},
	"personal": {"treatment": "clear"},
	"sensitive": {"treatment": "clear"},
} if {
	mode == "publisher"
} else := {
	"public": {"treatment": "clear"},
	"internal": {"treatment": "deny"},
	"personal": {"treatment": "null"},
	"sensitive": {"treatment": "null"},
} if {
	mode == "open"
} else := {
	"public": {"treatment": "deny"},
	"internal": {"treatment": "deny"},
	"personal": {"treatment": "deny"},
	"sensitive": {"treatment": "deny"},
}

# Per column, under an agreement: deny outside its columns, else its mask. Empty otherwise.
# A mask is its method's treatment: `generalise` with its (non-empty) `generalise` parameters, a
# method of `method_treatments`, else (unknown method, none, hash without salt, generalise without
# parameters) deny. object.union merges recursively, the later object winning: a masked column
# outside the agreement's columns keeps its mask's `salt` or `generalise` next to
# `"treatment": "deny"`.
default overrides := {}

overrides := object.union_n([
	{name: object.get(methods, object.get(masks, [name, "method"], null), {"treatment": "deny"}) |
		some name, _ in masks
	},
	{name: {"treatment": "generalise", "generalise": parameters} |
		some name, mask in masks
		mask.method == "generalise"
		parameters := mask.generalise
		is_object(parameters)
		count(parameters) > 0
	},
	{name: {"treatment": "deny"} | some name in ungranted},
]) if {
	mode == "agreement"
	masks := agreement_masks
	methods := method_treatments
}

# The dataset's columns the agreement does not grant. `columns: []` grants every column; a
# missing or malformed list grants none.
ungranted := set() if {
	granted := agreement.columns
	is_array(granted)
	count(granted) == 0
} else := column_names - {name | some name in agreement.columns}

default agreement_masks := {}

agreement_masks := masks if {
	masks := agreement.masks
	is_object(masks)
}

# The treatment of each mask method that takes no parameters: `hash` takes the agreement's salt,
# and denies without one. (object.union: a value that needs no further substitution when read.)
method_treatments := object.union({"clear": {"treatment": "clear"}, "null": {"treatment": "null"}}, {"hash": hashed})

hashed := {"treatment": "hash", "salt": salt} if {
	salt := agreement.salt
	is_string(salt)
	salt != ""
} else := deny

#
# Row filters, consent, aggregate-only (under an agreement only)
#

# (`agreement` is {} without one: its fields are undefined.)
territory_filter := filter if {
	filter := agreement.territory_filter
	filter != null
}

default row_filters := []

row_filters := [{"column": column, "op": "in", "values": codes}] if {
	filter := territory_filter
	column := filter.column
	is_string(column)
	column != ""
	codes := filter.codes
	is_array(codes)
}

no_consent := {"required": false, "purpose": "", "subject_column": ""}

consent_required if agreement.legal_basis == "consent"

default consent := {"required": false, "purpose": "", "subject_column": ""}

consent := {"required": true, "purpose": purpose, "subject_column": subject_column} if consent_required

default aggregate_only := false

aggregate_only if agreement.aggregate_only == true

default min_group_size := 0

min_group_size := group_size if aggregate_only

# The minimum group size of an aggregate-only agreement: its own, else the settings'.
group_size := size if {
	size := agreement.min_group_size
	is_number(size)
	size > 0
} else := registry.default_min_group_size

#
# Reasons: why the read is refused. Empty when allowed.
#

reasons contains reason if some reason in problems

# A refusal without a specific problem still says why.
reasons contains "read refused" if {
	not allow
	count(problems) == 0
}

problems contains reason if some reason in request_problems

problems contains "unauthenticated caller" if not authenticated

problems contains sprintf("party '%s' is suspended", [id]) if some id in suspended

problems contains "the request names no dataset" if dataset_id == ""

# Purpose

problems contains "the request names no purpose" if purpose == ""

problems contains sprintf("purpose '%s' is not a known purpose", [purpose]) if {
	purpose != ""
	not purpose_known
}

problems contains "the consent registry is not loaded" if not registry.loaded

# The dataset's status (the publisher also reads its drafts and deprecated datasets)

problems contains sprintf("dataset '%s' is deprecated", [dataset_id]) if {
	dataset_status == "deprecated"
	not own_dataset
}

problems contains sprintf("dataset '%s' is not published (status '%s')", [dataset_id, dataset_status]) if {
	not dataset_status in {"published", "deprecated"}
	not own_dataset
}

# No way to read: why no agreement applies

problems contains reason if {
	mode == "none"
	some reason in no_way_to_read
}

no_way_to_read contains registry.missing(input.subject, dataset_id, "read") if {
	authenticated
	dataset_id != ""
	count(held_ids) == 0
}

no_way_to_read contains reason if {
	authenticated
	some id in held_ids
	some reason in registry.refusals(id, registry.agreement(id))
}

no_way_to_read contains reason if {
	authenticated
	purpose != ""
	some id in held_ids
	reason := registry.purpose_refusal(id, registry.agreement(id), purpose)
}

no_way_to_read contains sprintf("dataset '%s' is %s: reading it requires an agreement", [dataset_id, access_level]) if {
	authenticated
	dataset_id != ""
	access_level != ""
}

no_way_to_read contains sprintf("dataset '%s' has no access level: reading it requires an agreement", [dataset_id]) if {
	authenticated
	dataset_id != ""
	access_level == ""
}

#
# Request problems: those a permitted read can still have.
#

request_problems contains sprintf("dataset '%s' has a column without a name or a column name listed twice", [dataset_id]) if {
	malformed_columns
}

# The agreement's own constraints

request_problems contains sprintf("agreement '%s' has a malformed territory filter", [agreement_id]) if {
	_ = territory_filter
	count(row_filters) == 0
}

request_problems contains sprintf("territory filter column '%s' of agreement '%s' is not a column of dataset '%s'", [column, agreement_id, dataset_id]) if {
	some row_filter in row_filters
	column := row_filter.column
	not column in column_names
}

request_problems contains reason if {
	consent_required
	some reason in consent_problems
}

consent_problems contains sprintf("agreement '%s' rests on consent, but dataset '%s' names no subject column", [agreement_id, dataset_id]) if {
	subject_column == ""
}

consent_problems contains sprintf("subject column '%s' is not a column of dataset '%s'", [subject_column, dataset_id]) if {
	subject_column != ""
	not subject_column in column_names
}

# The request

request_problems contains sprintf("request.%s must be an array of column names", [key]) if some key in malformed_lists

request_problems contains "request.aggregates must be an array of {function, column}" if {
	value := input.request.aggregates
	not aggregates_array(value)
}

# The columns the request names, checked when the caller has a way to read: requested columns must
# exist and not be denied; filtering, grouping, ordering and aggregating need clear values.
request_problems contains reason if {
	mode != "none"
	some reason in column_problems
}

column_problems contains requested_problem(name, treatment) if {
	columns := treatments
	some name in requested
	treatment := object.get(columns, name, null)
	treatment in {null, {"treatment": "deny"}}
}

column_problems contains used_problem(usage, name, treatment) if {
	columns := treatments
	some usage, names in lists
	usage != "columns"
	some name in names
	treatment := object.get(columns, name, null)
	treatment != {"treatment": "clear"}
}

column_problems contains used_problem("aggregates", name, treatment) if {
	columns := treatments
	some name in aggregated
	treatment := object.get(columns, name, null)
	treatment != {"treatment": "clear"}
}

# Why a requested column, of this treatment (null: none), cannot be read.
requested_problem(name, null) := sprintf("column '%s' is not a column of dataset '%s'", [name, dataset_id])

requested_problem(name, {"treatment": "deny"}) := sprintf("column '%s' is not granted", [name])

# Why a column used in a clause (`usage`), of this treatment (null: none), cannot be used.
used_problem(usage, name, null) := sprintf("column '%s' in %s is not a column of dataset '%s'", [name, usage, dataset_id])

used_problem(usage, name, treatment) := sprintf("column '%s' in %s must be clear, but its treatment is %s", [name, usage, treatment.treatment]) if {
	treatment != null
}

request_problems contains sprintf("aggregate %s needs a column", [aggregate.function]) if {
	some aggregate in aggregates
	aggregate.column in {"", "*"}
	aggregate.function != "count"
}

# Aggregate-only access

request_problems contains reason if {
	aggregate_only
	some reason in aggregate_only_problems
}

aggregate_only_problems contains sprintf("access to dataset '%s' is aggregate-only: the request must aggregate", [dataset_id]) if {
	count(aggregates) == 0
}

aggregate_only_problems contains sprintf("column '%s' is neither grouped nor aggregated, and access to dataset '%s' is aggregate-only", [name, dataset_id]) if {
	some name in requested
	not name in grouped
	not name in aggregated
}

aggregates_array(value) if {
	is_array(value)
	every aggregate in value {
		is_string(aggregate.function)
		is_string(object.get(aggregate, "column", ""))
	}
}
