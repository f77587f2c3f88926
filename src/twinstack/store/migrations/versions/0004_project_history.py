"""Project history: entities, their immutable versions, model states (commits) with change
sets and checkpoint snapshots, the head of each project, and labels.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = ("geometry", "material", "mesh", "source", "solver", "result", "plot", "folder", "data")


def _when(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def _fk(table: str, column: str, target: str, ondelete: str | None = None
        ) -> sa.ForeignKeyConstraint:
    """A foreign key named as the models' naming convention names it."""
    return sa.ForeignKeyConstraint([column], [target], ondelete=ondelete,
                                   name=f"fk_{table}_{column}_{target.split('.')[0]}")


def upgrade() -> None:
    kinds = ", ".join(f"'{k}'" for k in KINDS)
    op.create_table(
        "entities",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_entities"),
        _fk("entities", "project_id", "projects.id", "CASCADE"),
        sa.CheckConstraint(f"kind IN ({kinds})", name="ck_entities_kind"),
    )
    op.create_index("ix_entities_project_id", "entities", ["project_id"])
    op.create_table(
        "entity_versions",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("entity_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("parent_id", sa.String(32), nullable=True),
        sa.Column("properties", sa.JSON, nullable=False),
        sa.Column("blobs", sa.JSON, nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_entity_versions"),
        _fk("entity_versions", "entity_id", "entities.id", "CASCADE"),
    )
    op.create_index("ix_entity_versions_entity_id", "entity_versions", ["entity_id"])
    op.create_table(
        "model_states",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("parent_id", sa.Integer, nullable=True),
        sa.Column("depth", sa.Integer, nullable=False),
        sa.Column("checkpoint", sa.Boolean, nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_model_states"),
        _fk("model_states", "project_id", "projects.id", "CASCADE"),
        _fk("model_states", "parent_id", "model_states.id"),
    )
    op.create_index("ix_model_states_project_id", "model_states", ["project_id"])
    op.create_index("ix_model_states_parent_id", "model_states", ["parent_id"])
    op.create_table(
        "state_changes",
        sa.Column("state_id", sa.Integer, nullable=False),
        sa.Column("entity_id", sa.String(32), nullable=False),
        sa.Column("version_id", sa.Integer, nullable=True),
        sa.PrimaryKeyConstraint("state_id", "entity_id", name="pk_state_changes"),
        _fk("state_changes", "state_id", "model_states.id", "CASCADE"),
        _fk("state_changes", "version_id", "entity_versions.id"),
    )
    op.create_table(
        "state_snapshots",
        sa.Column("state_id", sa.Integer, nullable=False),
        sa.Column("entries", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("state_id", name="pk_state_snapshots"),
        _fk("state_snapshots", "state_id", "model_states.id", "CASCADE"),
    )
    op.create_table(
        "model_heads",
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("state_id", sa.Integer, nullable=False),
        sa.Column("tip_id", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("project_id", name="pk_model_heads"),
        _fk("model_heads", "project_id", "projects.id", "CASCADE"),
        _fk("model_heads", "state_id", "model_states.id"),
        _fk("model_heads", "tip_id", "model_states.id"),
    )
    op.create_table(
        "model_labels",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("state_id", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_model_labels"),
        sa.UniqueConstraint("project_id", "name", name="uq_model_labels_project_id_name"),
        _fk("model_labels", "project_id", "projects.id", "CASCADE"),
        _fk("model_labels", "state_id", "model_states.id", "CASCADE"),
    )
    op.create_index("ix_model_labels_state_id", "model_labels", ["state_id"])


def downgrade() -> None:
    for table in ("model_labels", "model_heads", "state_snapshots", "state_changes",
                  "model_states", "entity_versions", "entities"):
        op.drop_table(table)
