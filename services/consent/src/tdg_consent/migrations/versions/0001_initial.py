"""Parties, the followed datasets, agreements and their history, consents and their log,
erasures, the revision counters, the catalog events consumed, and the outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _big_id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "parties",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("organisation", sa.String(63), nullable=False, index=True),
        sa.Column("roles", sa.JSON, nullable=False),
        sa.Column("siren", sa.String(9), nullable=False),
        sa.Column("contact", sa.String(320), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("suspension_reason", sa.Text, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("registry_revision", sa.BigInteger, nullable=False, index=True),
    )
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("publisher", sa.String(63), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("access_level", sa.String(16), nullable=False),
        sa.Column("columns", sa.JSON, nullable=False),
        sa.Column("subject_column", sa.String(63), nullable=False),
        sa.Column("updated_at", ts, nullable=False),
    )
    op.create_table(
        "agreements",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("dataset_id", sa.String(200), nullable=False, index=True),
        sa.Column("publisher", sa.String(63), nullable=False, index=True),
        sa.Column("consumer", sa.String(63), nullable=False, index=True),
        sa.Column("consumer_org", sa.String(63), nullable=False, index=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("purposes", sa.JSON, nullable=False),
        sa.Column("legal_basis", sa.String(32), nullable=False),
        sa.Column("justification", sa.Text, nullable=False),
        sa.Column("requested_columns", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("conditions", sa.JSON, nullable=True),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("requested_by", sa.String(63), nullable=False),
        sa.Column("decided_by", sa.String(63), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("valid_until", ts, nullable=True, index=True),
        sa.Column("registry_revision", sa.BigInteger, nullable=False, index=True),
    )
    op.create_table(
        "agreement_history",
        sa.Column("seq", _big_id(), primary_key=True, autoincrement=True),
        sa.Column("agreement_id", sa.String(40), nullable=False, index=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(63), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", ts, nullable=False),
    )
    op.create_table(
        "consents",
        sa.Column("subject_id", sa.String(200), primary_key=True),
        sa.Column("purpose", sa.String(63), primary_key=True),
        sa.Column("dataset_id", sa.String(200), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("receipt_id", sa.String(40), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("given_at", ts, nullable=True),
        sa.Column("withdrawn_at", ts, nullable=True),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_consents_set", "consents", ["purpose", "dataset_id", "state", "subject_id"])
    op.create_table(
        "consent_log",
        sa.Column("revision", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("receipt_id", sa.String(40), nullable=False, unique=True),
        sa.Column("subject_id", sa.String(200), nullable=False),
        sa.Column("purpose", sa.String(63), nullable=False),
        sa.Column("dataset_id", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("at", ts, nullable=False),
    )
    op.create_index("ix_consent_log_purpose", "consent_log", ["purpose", "revision"])
    op.create_table(
        "erasures",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("subject_id", sa.String(200), nullable=False, index=True),
        sa.Column("dataset_id", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("requested_by", sa.String(63), nullable=False),
        sa.Column("requested_at", ts, nullable=False),
        sa.Column("completed_at", ts, nullable=True),
        sa.Column("datasets", sa.JSON, nullable=False),
        sa.Column("failure", sa.Text, nullable=False),
    )
    op.create_table(
        "consumed_offsets",
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
    )
    counters = op.create_table(
        "counters",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(counters, [{"name": "registry", "value": 0}, {"name": "consent", "value": 0}])
    op.create_table(
        "outbox",
        sa.Column("seq", _big_id(), primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("ce_id", sa.String(64), nullable=False, unique=True),
        sa.Column("ce_type", sa.String(255), nullable=False),
        sa.Column("ce_source", sa.String(255), nullable=False),
        sa.Column("ce_subject", sa.String(255), nullable=False),
        sa.Column("ce_time", ts, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("sent_at", ts, nullable=True, index=True),
    )


def downgrade() -> None:
    for table in (
        "outbox",
        "counters",
        "consumed_offsets",
        "erasures",
        "consent_log",
        "consents",
        "agreement_history",
        "agreements",
        "datasets",
        "parties",
    ):
        op.drop_table(table)
