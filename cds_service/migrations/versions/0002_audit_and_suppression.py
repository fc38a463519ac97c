"""Audit record of every hook call; issued cards and their overrides (suppression).

No column holds patient data: patients appear only as an HMAC of their id.

Revision ID: 0002
Revises: 0001
Create Date: 2026-06-15
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invocation_audit",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("hook_instance", sa.String(200), nullable=True),
        sa.Column("service_id", sa.String(200), nullable=False),
        sa.Column("hook", sa.String(100), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("rules_fired", sa.Text(), nullable=False),
        sa.Column("rules_suppressed", sa.Text(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
    )
    op.create_index("ix_invocation_audit_hook_instance", "invocation_audit", ["hook_instance"])
    op.create_index("ix_invocation_audit_answered_at", "invocation_audit", ["answered_at"])
    op.create_table(
        "issued_card",
        sa.Column("card_uuid", sa.String(64), primary_key=True),
        sa.Column("service_id", sa.String(200), nullable=False),
        sa.Column("rule_id", sa.String(200), nullable=False),
        sa.Column("indicator", sa.String(20), nullable=False),
        sa.Column("patient_key", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_issued_card_issued_at", "issued_card", ["issued_at"])
    op.create_table(
        "card_override",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("card_uuid", sa.String(64), nullable=False),
        sa.Column("patient_key", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.String(200), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("override_code", sa.String(200), nullable=True),
        sa.Column("overridden_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_card_override_patient_key_overridden_at", "card_override",
                    ["patient_key", "overridden_at"])


def downgrade() -> None:
    op.drop_table("card_override")
    op.drop_table("issued_card")
    op.drop_table("invocation_audit")
