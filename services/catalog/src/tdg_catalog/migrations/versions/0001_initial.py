"""Datasets, their themes and schema versions, and the outbox.

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


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("publisher", sa.String(63), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("access_level", sa.String(16), nullable=False, index=True),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("latest_schema_version", sa.Integer, nullable=False),
        sa.Column("latest_schema", sa.JSON, nullable=False),
        sa.Column("search_text", sa.Text, nullable=False),
        sa.Column("search_fields", sa.JSON, nullable=False),
        sa.Column("deprecation_reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "dataset_themes",
        sa.Column(
            "dataset_id",
            sa.String(200),
            sa.ForeignKey("datasets.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("theme", sa.String(16), primary_key=True, index=True),
    )
    op.create_table(
        "schema_versions",
        sa.Column(
            "dataset_id",
            sa.String(200),
            sa.ForeignKey("datasets.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("schema", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("ce_id", sa.String(64), nullable=False, unique=True),
        sa.Column("ce_type", sa.String(255), nullable=False),
        sa.Column("ce_source", sa.String(255), nullable=False),
        sa.Column("ce_subject", sa.String(255), nullable=False),
        sa.Column("ce_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True, index=True),
    )


def downgrade() -> None:
    for table in ("outbox", "schema_versions", "dataset_themes", "datasets"):
        op.drop_table(table)
