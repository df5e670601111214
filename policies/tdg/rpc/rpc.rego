# METADATA
# title: RPC authorization
# description: |
#   Decides every gRPC call to a tdg service. The authorization interceptor (tdg_core.grpc) posts
#   {method, service, rpc, subject: {party, org, roles}, resource} to /v1/data/tdg/rpc/decision and
#   applies the answer, failing closed. See policies/README.md for the contract.
#
#   To govern a new method: add it to `permissions` with a permission class; for a new class, add
#   `grants("<class>")` definitions (when the class is granted) and a `refusals` rule (why it was
#   not).
#
#   Every call is also refused when the caller's party or organisation is suspended in the consent
#   registry (data.tdg.registry).
package tdg.rpc

import data.tdg.lib.registry
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
	"/tdg.consent.v1.ConsentService/RegisterParty": "parties.manage",
	"/tdg.consent.v1.ConsentService/SuspendParty": "parties.manage",
	"/tdg.consent.v1.ConsentService/ReinstateParty": "parties.manage",
	"/tdg.consent.v1.ConsentService/GetParty": "registry.read",
	"/tdg.consent.v1.ConsentService/ListParties": "registry.read",
	"/tdg.consent.v1.ConsentService/ListPurposes": "registry.read",
	"/tdg.consent.v1.ConsentService/ListProducerGrants": "registry.read",
	"/tdg.consent.v1.ConsentService/RequestAccess": "access.request",
	"/tdg.consent.v1.ConsentService/ApproveAccess": "access.decide",
	"/tdg.consent.v1.ConsentService/RefuseAccess": "access.decide",
	"/tdg.consent.v1.ConsentService/SuspendAgreement": "access.decide",
	"/tdg.consent.v1.ConsentService/ResumeAgreement": "access.decide",
	"/tdg.consent.v1.ConsentService/RevokeAgreement": "access.revoke",
	"/tdg.consent.v1.ConsentService/GetAgreement": "agreement.read",
	"/tdg.consent.v1.ConsentService/ListAgreements": "agreement.read",
	"/tdg.consent.v1.ConsentService/GiveConsent": "consent.record",
	"/tdg.consent.v1.ConsentService/WithdrawConsent": "consent.record",
	"/tdg.consent.v1.ConsentService/ListConsents": "consent.record",
	"/tdg.consent.v1.ConsentService/RequestErasure": "consent.record",
	"/tdg.consent.v1.ConsentService/GetErasure": "erasure.read",
	"/tdg.consent.v1.ConsentService/ListErasures": "erasure.read",
	"/tdg.consent.v1.ConsentService/StreamSubjectSet": "consent.subjects",
	"/tdg.ingest.v1.IngestService/Publish": "ingest.publish",
	"/tdg.ingest.v1.IngestService/Status": "ingest.monitor",
	"/tdg.ingest.v1.IngestService/GetDeliveryIndicators": "ingest.monitor",
	"/tdg.ingest.v1.IngestService/ListRejects": "ingest.manage",
	"/tdg.ingest.v1.IngestService/GetReject": "ingest.manage",
	"/tdg.ingest.v1.IngestService/ReplayRejects": "ingest.manage",
	"/tdg.ingest.v1.IngestService/CompactTable": "ingest.manage",
	"/tdg.query.v1.QueryService/Query": "query.read",
	"/tdg.query.v1.QueryService/ListReadable": "query.read",
	"/tdg.query.v1.QueryService/SearchAudit": "query.audit",
	# The query service's Arrow Flight server asks the same decision, with Flight's method names.
	# Only the reading methods are governed: DoPut, DoExchange, DoAction… are denied.
	"/arrow.flight.protocol.FlightService/GetFlightInfo": "query.read",
	"/arrow.flight.protocol.FlightService/GetSchema": "query.read",
	"/arrow.flight.protocol.FlightService/DoGet": "query.read",
	"/arrow.flight.protocol.FlightService/ListFlights": "query.read",
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
	permission_granted
	count(suspended) == 0
}

# The called method ("/<package>.<Service>/<Rpc>"), "" when the input names none.
default method := ""

method := input.method if is_string(input.method)

# The permission class of the called method; undefined for a method no rule governs.
permission := permissions[method]

governed if permissions[method]

# The caller holds the permission of the called method.
permission_granted if grants(permission)

# A governed method whose permission the caller was not granted.
refused if {
	governed
	not permission_granted
}

# The caller's party and organisation ids that the consent registry lists as suspended.
default suspended := set()

suspended := registry.suspended_ids(input.subject)

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

# METADATA
# description: |
#   A string field of the resource ("" when absent or not a string); the consent methods send
#   dataset_id, publisher, agreement_id, consumer, consumer_org and subject_id.
resource_field(name) := value if {
	value := input.resource[name]
	is_string(value)
} else := ""

# METADATA
# description: |
#   A string field of the dataset an ingest call or a query audit search concerns
#   (`resource.dataset`: id, publisher, status), "" when absent or not a string.
dataset_field(name) := value if {
	value := input.resource.dataset[name]
	is_string(value)
} else := ""

# The caller's party, "" when unauthenticated.
default subject_party := ""

subject_party := input.subject.party if is_string(input.subject.party)

# The publisher's data officer: `data-officer` of the (non-empty) publisher named by the resource.
publisher_officer if {
	roles.held(input.subject, roles.data_officer)
	resource_publisher != ""
	subject_org == resource_publisher
}

# The data officer of the (non-empty) publisher of the dataset an ingest or query call names.
dataset_officer if {
	roles.held(input.subject, roles.data_officer)
	dataset_field("publisher") != ""
	subject_org == dataset_field("publisher")
}

# The data officer of the publisher of the (named) dataset whose audit trail a query call searches.
audited_dataset_officer if {
	dataset_field("id") != ""
	dataset_officer
}

# The producer whose delivery an ingest call asks about: the caller's party, or its organisation.
own_delivery if {
	producer := resource_field("producer")
	producer != ""
	producer in {subject_party, subject_org}
}

# The publisher's side of an agreement: platform-admin or the publisher's data officer.
publisher_side if roles.held(input.subject, roles.platform_admin)

publisher_side if publisher_officer

# The data subject's side: platform-admin, the citizens' portal, or the citizen themselves.
subject_side if roles.held(input.subject, roles.platform_admin)

subject_side if roles.held(input.subject, roles.consent_registrar)

subject_side if citizen_themselves

# The consumer itself (`subject.party == resource.consumer`).
consumer_itself if {
	resource_field("consumer") != ""
	subject_party == resource_field("consumer")
}

# A data officer of the consumer's organisation.
consumer_officer if {
	roles.held(input.subject, roles.data_officer)
	resource_field("consumer_org") != ""
	subject_org == resource_field("consumer_org")
}

# A member of the consumer's organisation (any role).
consumer_member if {
	resource_field("consumer_org") != ""
	subject_org == resource_field("consumer_org")
}

# A citizen acting for themselves: their party is the data subject of the request.
citizen_themselves if {
	roles.held(input.subject, roles.citizen)
	resource_field("subject_id") != ""
	subject_party == resource_field("subject_id")
}

# How reasons name the call: the RPC name when given, else the full method.
rpc_name := input.rpc if {
	is_string(input.rpc)
	input.rpc != ""
} else := method

#
# Permission classes: when each is granted to the caller.
#

# METADATA
# description: |
#   true when the caller is granted permission class `class`: one definition per way of being
#   granted it. (A function rather than a set: OPA's index then evaluates only the definitions of
#   the class asked for, not every class's.) A class without definitions is never granted.

# A management call must name the publisher it acts for; without one nobody is granted it.
grants("catalog.manage") if {
	roles.held(input.subject, roles.platform_admin)
	resource_publisher != ""
}

grants("catalog.manage") if {
	roles.held(input.subject, roles.data_officer)
	resource_publisher != ""
	subject_org == resource_publisher
}

# Reading the catalog needs only an authenticated caller (checked by `allow`).
grants("catalog.read") := true

# Registering, suspending and reinstating parties is the platform's.
grants("parties.manage") if roles.held(input.subject, roles.platform_admin)

# Parties, purposes and producer grants are readable by any authenticated caller.
grants("registry.read") := true

# Requesting access: the consumer itself, a data officer of its organisation, or platform-admin.
grants("access.request") if roles.held(input.subject, roles.platform_admin)

grants("access.request") if consumer_itself

grants("access.request") if consumer_officer

# Deciding on an agreement (approve, refuse, suspend, resume): the publisher's side.
grants("access.decide") if publisher_side

# Revoking: the publisher's side or the consumer's side.
grants("access.revoke") if publisher_side

grants("access.revoke") if consumer_itself

grants("access.revoke") if consumer_officer

# Reading agreements: platform-admin, the publisher's data officer, the consumer's side. The resource
# of ListAgreements holds the request's filters: without publisher, consumer or consumer_org
# filter, none of the rules below matches and only platform-admin is granted.
grants("agreement.read") if roles.held(input.subject, roles.platform_admin)

grants("agreement.read") if publisher_officer

grants("agreement.read") if consumer_itself

grants("agreement.read") if consumer_member

# Recording consents and erasure requests: the citizens' portal, or the citizen themselves.
grants("consent.record") if subject_side

# Reading erasure requests: as consent.record, plus any data officer (erasures concern publishers).
grants("erasure.read") if subject_side

grants("erasure.read") if roles.held(input.subject, roles.data_officer)

# Streaming consent subject sets: tdg's own services.
grants("consent.subjects") if roles.held(input.subject, roles.platform_admin)

grants("consent.subjects") if roles.held(input.subject, roles.platform_service)

# Sending records: any authenticated caller; whether it may write to each dataset is tdg.write's
# decision, asked by the ingest service per dataset.
grants("ingest.publish") := true

# Watching deliveries and status: platform-admin and the publisher's data officer (for Status
# without a dataset, the service names the caller's organisation as the publisher and lists its
# datasets); a producer also sees its own delivery indicators.
grants("ingest.monitor") if roles.held(input.subject, roles.platform_admin)

grants("ingest.monitor") if dataset_officer

grants("ingest.monitor") if {
	method == "/tdg.ingest.v1.IngestService/GetDeliveryIndicators"
	own_delivery
}

# Rejects and table maintenance: platform-admin and the publisher's data officer.
grants("ingest.manage") if roles.held(input.subject, roles.platform_admin)

grants("ingest.manage") if dataset_officer

# Querying, and listing the datasets readable: any authenticated caller; what it may read is
# tdg.read's decision, asked by the query service for every query (on gRPC and on Arrow Flight).
grants("query.read") := true

# Searching the query audit trail: platform-admin for anything; a data officer for one named
# dataset of its own organisation (the service sends `resource.dataset` {id, publisher}).
grants("query.audit") if roles.held(input.subject, roles.platform_admin)

grants("query.audit") if audited_dataset_officer

#
# Reasons: why the call is refused. Empty when allowed.
#

reasons contains "unauthenticated caller" if not authenticated

reasons contains sprintf("method %s is not governed by any rule", [method]) if not governed

reasons contains sprintf("party '%s' is suspended", [id]) if some id in suspended

reasons contains reason if {
	authenticated
	refused
	some reason in refusals
}

# A class refused without a specific refusal still says why (a deny never comes without a reason).
reasons contains sprintf("%s requires permission %s, which the caller does not hold", [rpc_name, permission]) if {
	authenticated
	refused
	count(refusals) == 0
}

# Per class: why an authenticated caller was not granted the method's permission.
refusals contains sprintf("%s requires a dataset with a publisher, and the request names none", [rpc_name]) if {
	permission == "catalog.manage"
	refused
	resource_publisher == ""
}

refusals contains reason if {
	permission == "catalog.manage"
	refused
	resource_publisher != ""
	reason := sprintf(
		"role %s of publisher '%s' (or %s) required to call %s on '%s'",
		[roles.data_officer, resource_publisher, roles.platform_admin, rpc_name, managed_dataset],
	)
}

refusals contains sprintf("role %s required to call %s", [roles.platform_admin, rpc_name]) if {
	permission == "parties.manage"
	refused
}

refusals contains reason if {
	permission == "access.request"
	refused
	reason := sprintf(
		"%s for consumer %s requires being that consumer, a %s of its organisation %s, or %s",
		[rpc_name, quoted(resource_field("consumer")), roles.data_officer, quoted(resource_field("consumer_org")), roles.platform_admin],
	)
}

refusals contains reason if {
	permission == "access.decide"
	refused
	reason := sprintf(
		"role %s of publisher %s (or %s) required to call %s on %s",
		[roles.data_officer, quoted(resource_publisher), roles.platform_admin, rpc_name, agreement_named],
	)
}

refusals contains reason if {
	permission == "access.revoke"
	refused
	reason := sprintf(
		"%s on %s requires a %s of publisher %s, the consumer %s or a %s of its organisation %s, or %s",
		[
			rpc_name, agreement_named, roles.data_officer, quoted(resource_publisher),
			quoted(resource_field("consumer")), roles.data_officer, quoted(resource_field("consumer_org")),
			roles.platform_admin,
		],
	)
}

refusals contains sprintf("%s without a publisher, consumer or consumer_org filter requires %s", [rpc_name, roles.platform_admin]) if {
	permission == "agreement.read"
	refused
	not names_a_party
}

refusals contains reason if {
	permission == "agreement.read"
	refused
	names_a_party
	reason := sprintf(
		"%s on %s requires a %s of publisher %s, the consumer %s or its organisation %s, or %s",
		[
			rpc_name, agreement_named, roles.data_officer, quoted(resource_publisher),
			quoted(resource_field("consumer")), quoted(resource_field("consumer_org")), roles.platform_admin,
		],
	)
}

refusals contains reason if {
	permission == "consent.record"
	refused
	reason := sprintf(
		"%s for data subject %s requires role %s, role %s acting for themselves, or %s",
		[rpc_name, quoted(resource_field("subject_id")), roles.consent_registrar, roles.citizen, roles.platform_admin],
	)
}

refusals contains reason if {
	permission == "erasure.read"
	refused
	reason := sprintf(
		"%s for data subject %s requires role %s, %s, role %s acting for themselves, or %s",
		[rpc_name, quoted(resource_field("subject_id")), roles.consent_registrar, roles.data_officer, roles.citizen, roles.platform_admin],
	)
}

refusals contains sprintf("role %s (or %s) required to call %s", [roles.platform_service, roles.platform_admin, rpc_name]) if {
	permission == "consent.subjects"
	refused
}

refusals contains reason if {
	permission == "ingest.monitor"
	refused
	method == "/tdg.ingest.v1.IngestService/GetDeliveryIndicators"
	reason := sprintf(
		"%s on %s requires a %s of publisher %s, the producer %s (or a party of that organisation), or %s",
		[rpc_name, ingest_dataset_named, roles.data_officer, quoted(dataset_field("publisher")), quoted(resource_field("producer")), roles.platform_admin],
	)
}

refusals contains reason if {
	permission == "ingest.monitor"
	refused
	method != "/tdg.ingest.v1.IngestService/GetDeliveryIndicators"
	reason := sprintf(
		"role %s of publisher %s (or %s) required to call %s on %s",
		[roles.data_officer, quoted(dataset_field("publisher")), roles.platform_admin, rpc_name, ingest_dataset_named],
	)
}

refusals contains reason if {
	permission == "ingest.manage"
	refused
	reason := sprintf(
		"role %s of publisher %s (or %s) required to call %s on %s",
		[roles.data_officer, quoted(dataset_field("publisher")), roles.platform_admin, rpc_name, ingest_dataset_named],
	)
}

refusals contains reason if {
	permission == "query.audit"
	refused
	dataset_field("id") != ""
	reason := sprintf(
		"role %s of publisher %s (or %s) required to call %s on %s",
		[roles.data_officer, quoted(dataset_field("publisher")), roles.platform_admin, rpc_name, ingest_dataset_named],
	)
}

refusals contains reason if {
	permission == "query.audit"
	refused
	dataset_field("id") == ""
	roles.held(input.subject, roles.data_officer)
	reason := sprintf(
		"%s without a dataset requires %s: as %s, name one of the datasets of %s",
		[rpc_name, roles.platform_admin, roles.data_officer, quoted(subject_org)],
	)
}

refusals contains reason if {
	permission == "query.audit"
	refused
	dataset_field("id") == ""
	not roles.held(input.subject, roles.data_officer)
	reason := sprintf(
		"%s without a dataset requires %s (or a %s naming a dataset of its organisation)",
		[rpc_name, roles.platform_admin, roles.data_officer],
	)
}

# How ingest (and query audit) refusals name the dataset: its id, else its publisher's datasets, else "a dataset".
ingest_dataset_named := sprintf("dataset '%s'", [dataset_field("id")]) if {
	dataset_field("id") != ""
} else := sprintf("the datasets of '%s'", [dataset_field("publisher")]) if {
	dataset_field("publisher") != ""
} else := "a dataset"

# The agreement resource (or ListAgreements filter) names a publisher, consumer or consumer_org.
names_a_party if {
	some name in ["publisher", "consumer", "consumer_org"]
	resource_field(name) != ""
}

# How refusals name an id of the resource: quoted, or "(none)" when the request names none.
quoted(id) := sprintf("'%s'", [id]) if {
	id != ""
} else := "(none)"

# How consent refusals name the agreement: its id, else the dataset, else "an agreement".
agreement_named := sprintf("agreement '%s'", [resource_field("agreement_id")]) if {
	resource_field("agreement_id") != ""
} else := sprintf("an agreement on '%s'", [resource_field("dataset_id")]) if {
	resource_field("dataset_id") != ""
} else := "an agreement"

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
