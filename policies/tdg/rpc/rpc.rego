# METADATA
# title: RPC authorization
# description: |
#   Decides every gRPC call to a tdg service. The authorization interceptor (tdg_core.grpc) posts
#   {method, service, rpc, subject: {party, org, roles}, resource} to /v1/data/tdg/rpc/decision and
#   applies the answer, failing closed. See policies/README.md for the contract.
#
#   To govern a new method: add it to `permissions` with a permission class; for a new class, add a
#   `granted` rule (when the class is granted) and a `refusals` rule (why it was not).
package tdg.rpc

import data.tdg.lib.roles

# METADATA
# description: Every governed method, mapped to its permission class. A method absent here is denied.
permissions := {
	"/tdg.catalog.v1.CatalogService/RegisterDataset": "catalog.manage",
	"/tdg.catalog.v1.CatalogService/UpdateMetadata": "catalog.manage",
	"/tdg.catalog.v1.CatalogService/EvolveSchema": "catalog.manage",
	"/tdg.catalog.v1.CatalogService/PublishDataset": "catalog.manage",
	"/tdg.catalog.v1.CatalogService/DeprecateDataset": "catalog.manage",
	"/tdg.catalog.v1.CatalogService/GetDataset": "catalog.read",
	"/tdg.catalog.v1.CatalogService/ListDatasets": "catalog.read",
	"/tdg.catalog.v1.CatalogService/SearchDatasets": "catalog.read",
	"/tdg.catalog.v1.CatalogService/ExportDcat": "catalog.read",
}

# METADATA
# description: The answer the interceptor applies; always an object, on allow and on deny.
decision := {
	"allow": allow,
	"reasons": sort(reasons),
	"draft_scope": draft_scope,
}

default allow := false

allow if {
	authenticated
	permission in granted
}

# The called method ("/<package>.<Service>/<Rpc>"), "" when the input names none.
default method := ""

method := input.method if is_string(input.method)

# The permission class of the called method; undefined for a method no rule governs.
permission := permissions[method]

governed if method in object.keys(permissions)

authenticated if {
	is_string(input.subject.party)
	input.subject.party != ""
}

# The caller's organisation (a publisher id), "" when the token names none.
default subject_org := ""

subject_org := input.subject.org if is_string(input.subject.org)

# The publisher owning the resource, "" when the request names none.
default resource_publisher := ""

resource_publisher := input.resource.publisher if is_string(input.resource.publisher)

# How reasons name the call: the RPC name when given, else the full method.
rpc_name := input.rpc if {
	is_string(input.rpc)
	input.rpc != ""
} else := method

#
# Permission classes: when each is granted to the caller.
#

# A management call must name the publisher it acts for; without one nobody is granted it.
granted contains "catalog.manage" if {
	roles.held(input.subject, roles.platform_admin)
	resource_publisher != ""
}

granted contains "catalog.manage" if {
	roles.held(input.subject, roles.data_officer)
	resource_publisher != ""
	subject_org == resource_publisher
}

# Reading the catalog needs only an authenticated caller (checked by `allow`).
granted contains "catalog.read"

#
# Reasons: why the call is refused. Empty when allowed.
#

reasons contains "unauthenticated caller" if not authenticated

reasons contains sprintf("method %s is not governed by any rule", [method]) if not governed

reasons contains reason if {
	authenticated
	not allow
	some reason in refusals
}

# A class refused without a specific refusal still says why (a deny never comes without a reason).
reasons contains sprintf("%s requires permission %s, which the caller does not hold", [rpc_name, permission]) if {
	authenticated
	not allow
	count(refusals) == 0
}

# Per class: why an authenticated caller was not granted the method's permission.
refusals contains sprintf("%s requires a dataset with a publisher, and the request names none", [rpc_name]) if {
	permission == "catalog.manage"
	not "catalog.manage" in granted
	resource_publisher == ""
}

refusals contains reason if {
	permission == "catalog.manage"
	not "catalog.manage" in granted
	resource_publisher != ""
	reason := sprintf(
		"role %s of publisher '%s' (or %s) required to call %s on '%s'",
		[roles.data_officer, resource_publisher, roles.platform_admin, rpc_name, managed_dataset],
	)
}

# How refusals name the dataset: its id when given, else its publisher.
managed_dataset := input.resource.dataset_id if {
	is_string(input.resource.dataset_id)
	input.resource.dataset_id != ""
} else := sprintf("a dataset of %s", [resource_publisher])

#
# Draft visibility: the catalog applies it to reads ("drafts are visible only to their publisher").
#

default draft_scope := {"all": false, "publishers": []}

draft_scope := {"all": true, "publishers": []} if {
	authenticated
	roles.held(input.subject, roles.platform_admin)
} else := {"all": false, "publishers": [subject_org]} if {
	authenticated
	subject_org != ""
}
