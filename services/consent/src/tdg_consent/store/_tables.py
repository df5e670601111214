"""The consent service's tables (SQLAlchemy Core), as the Alembic migrations create them.

The migrations beside the package are the schema's source of truth: a change here goes with a new
revision there, never an edit of an existing one.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from tdg_core.outbox import outbox_table

metadata_obj = MetaData()

parties = Table(
    "parties",
    metadata_obj,
    Column("id", String(63), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("organisation", String(63), nullable=False, index=True),
    Column("roles", JSON, nullable=False),
    Column("siren", String(9), nullable=False),
    Column("contact", String(320), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("suspension_reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The registry revision of its latest change: the OPA bundle reloads only what changed.
    Column("registry_revision", BigInteger, nullable=False, index=True, default=0),
)

datasets = Table(
    "datasets",
    metadata_obj,
    Column("id", String(200), primary_key=True),
    Column("publisher", String(63), nullable=False),
    Column("status", String(16), nullable=False),
    Column("access_level", String(16), nullable=False),
    Column("columns", JSON, nullable=False),
    Column("subject_column", String(63), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

agreements = Table(
    "agreements",
    metadata_obj,
    Column("id", String(40), primary_key=True),
    Column("dataset_id", String(200), nullable=False, index=True),
    Column("publisher", String(63), nullable=False, index=True),
    Column("consumer", String(63), nullable=False, index=True),
    Column("consumer_org", String(63), nullable=False, index=True),
    Column("kind", String(8), nullable=False),
    Column("purposes", JSON, nullable=False),
    Column("legal_basis", String(32), nullable=False),
    Column("justification", Text, nullable=False),
    Column("requested_columns", JSON, nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("conditions", JSON, nullable=True),
    Column("salt", String(64), nullable=False),
    Column("requested_by", String(63), nullable=False),
    Column("decided_by", String(63), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The end of validity, denormalised from conditions so the expiry sweep finds it by index.
    Column("valid_until", DateTime(timezone=True), nullable=True, index=True),
    Column("registry_revision", BigInteger, nullable=False, index=True, default=0),
)

agreement_history = Table(
    "agreement_history",
    metadata_obj,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("agreement_id", String(40), nullable=False, index=True),
    Column("state", String(16), nullable=False),
    Column("actor", String(63), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

# The current state of each (subject, purpose, dataset); dataset "" means every dataset.
consents = Table(
    "consents",
    metadata_obj,
    Column("subject_id", String(200), primary_key=True),
    Column("purpose", String(63), primary_key=True),
    Column("dataset_id", String(200), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("receipt_id", String(40), nullable=False),
    Column("source", String(100), nullable=False),
    Column("given_at", DateTime(timezone=True), nullable=True),
    Column("withdrawn_at", DateTime(timezone=True), nullable=True),
    Column("revision", BigInteger, nullable=False),
    Index("ix_consents_set", "purpose", "dataset_id", "state", "subject_id"),
)

# Every change, append-only: receipts and the changes since a revision.
consent_log = Table(
    "consent_log",
    metadata_obj,
    Column("revision", BigInteger, primary_key=True, autoincrement=False),
    Column("receipt_id", String(40), nullable=False, unique=True),
    Column("subject_id", String(200), nullable=False),
    Column("purpose", String(63), nullable=False),
    Column("dataset_id", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("source", String(100), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_consent_log_purpose", "purpose", "revision"),
)

erasures = Table(
    "erasures",
    metadata_obj,
    Column("id", String(40), primary_key=True),
    Column("subject_id", String(200), nullable=False, index=True),
    Column("dataset_id", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("source", String(100), nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("requested_by", String(63), nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    Column("datasets", JSON, nullable=False),
    Column("failure", Text, nullable=False),
)

# Where each topic follower (tdg_consent.follower) is in each partition, written with what it
# applied.
consumed_offsets = Table(
    "consumed_offsets",
    metadata_obj,
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)

counters = Table(
    "counters",
    metadata_obj,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

outbox = outbox_table(metadata_obj)
