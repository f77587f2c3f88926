"""Invitations (shares with names that have no account yet) and login-failure counters.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invitations",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("user_name", sa.String(64), nullable=True),
        sa.Column("group_name", sa.String(64), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_invitations"),
        sa.UniqueConstraint("project_id", "user_name",
                            name="uq_invitations_project_id_user_name"),
        sa.UniqueConstraint("project_id", "group_name",
                            name="uq_invitations_project_id_group_name"),
        sa.CheckConstraint("role IN ('viewer', 'editor', 'owner')", name="ck_invitations_role"),
        sa.CheckConstraint("(user_name IS NULL) <> (group_name IS NULL)",
                           name="ck_invitations_one_grantee"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE",
                                name="fk_invitations_project_id_projects"),
    )
    op.create_index("ix_invitations_user_name", "invitations", ["user_name"])
    op.create_index("ix_invitations_group_name", "invitations", ["group_name"])
    op.create_table(
        "login_failures",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_login_failures"),
    )


def downgrade() -> None:
    op.drop_table("login_failures")
    op.drop_table("invitations")
