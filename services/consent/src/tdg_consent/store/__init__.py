"""Persistence of the consent service: SQLAlchemy Core tables and queries (SQLite or PostgreSQL).

Every function takes the caller's connection, so a change, its outbox event and the revision
counters share one transaction. The schema is created by the Alembic migrations beside this
package.

- `_tables`: the tables, as the migrations create them;
- `_revisions`: the `registry` and `consent` counters that order the changes;
- `_parties`, `_agreements` (access requests and agreements, with their history), `_consents`
  (current states, the log, subject sets), `_erasures`: one module per aggregate;
- `_datasets`: the datasets followed from the catalog; `_positions`: where each topic follower is;
- `_rows`: what they share (UTC times, the portable upsert, row locks).
"""

from tdg_consent.store._agreements import (
    AgreementFilter,
    active_write_agreements,
    add_history,
    agreements_since,
    find_agreement,
    get_agreement,
    insert_agreement,
    list_agreements,
    past_end,
    save_agreement,
    stamp_agreement,
)
from tdg_consent.store._consents import (
    find_consent,
    record_consent,
    stream_subject_set,
    subject_changes,
    subject_consents,
)
from tdg_consent.store._datasets import find_dataset, update_dataset_fields, upsert_dataset
from tdg_consent.store._erasures import (
    find_erasure,
    get_erasure,
    insert_erasure,
    list_erasures,
    save_erasure_progress,
)
from tdg_consent.store._parties import (
    PartyFilter,
    find_party,
    get_party,
    insert_party,
    list_parties,
    parties_since,
    save_party,
    stamp_party,
)
from tdg_consent.store._positions import consumed, mark_consumed, position
from tdg_consent.store._revisions import CONSENT, REGISTRY, bump, current
from tdg_consent.store._tables import (
    agreement_history,
    agreements,
    consent_log,
    consents,
    consumed_offsets,
    counters,
    datasets,
    erasures,
    outbox,
    parties,
)

__all__ = [
    "CONSENT",
    "REGISTRY",
    "AgreementFilter",
    "PartyFilter",
    "active_write_agreements",
    "add_history",
    "agreement_history",
    "agreements",
    "agreements_since",
    "bump",
    "consent_log",
    "consents",
    "consumed",
    "consumed_offsets",
    "counters",
    "current",
    "datasets",
    "erasures",
    "find_agreement",
    "find_consent",
    "find_dataset",
    "find_erasure",
    "find_party",
    "get_agreement",
    "get_erasure",
    "get_party",
    "insert_agreement",
    "insert_erasure",
    "insert_party",
    "list_agreements",
    "list_erasures",
    "list_parties",
    "mark_consumed",
    "outbox",
    "parties",
    "parties_since",
    "past_end",
    "position",
    "record_consent",
    "save_agreement",
    "save_erasure_progress",
    "save_party",
    "stamp_agreement",
    "stamp_party",
    "stream_subject_set",
    "subject_changes",
    "subject_consents",
    "update_dataset_fields",
    "upsert_dataset",
]
