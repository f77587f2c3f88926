"""Queued sessions: state `queued` (waiting for an LSS with room, live: one per project),
the time a session was placed on an LSS, and an index on the state (the queue is read by it).

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES = ("starting", "ready", "failed", "closing", "closed", "lost")
LIVE = ("starting", "ready")


def _in(values: tuple[str, ...]) -> str:
    return "state IN ({})".format(", ".join(f"'{v}'" for v in values))


def _swap(states: tuple[str, ...], live: tuple[str, ...]) -> None:
    """Replace the state check and the one-live-session-per-project index (SQLite rebuilds
    the table for the check; the partial index is recreated outside, so its WHERE survives).

    The check is named as 0001 named it: the models' naming convention applies to the name
    given here as it did there, so both backends end with the same name as before."""
    op.drop_index("uq_sessions_live_project", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_constraint("ck_sessions_state", type_="check")
        batch.create_check_constraint("ck_sessions_state", _in(states))
    op.create_index("uq_sessions_live_project", "sessions", ["project_id"], unique=True,
                    sqlite_where=sa.text(_in(live)), postgresql_where=sa.text(_in(live)))


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("placed_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE sessions SET placed_at = created_at WHERE lss_id IS NOT NULL")
    _swap(("queued", *STATES), ("queued", *LIVE))
    op.create_index("ix_sessions_state", "sessions", ["state"])


def downgrade() -> None:
    # A queued session has no LSS to go back to: it ends as failed.
    op.execute("UPDATE sessions SET state = 'failed', reason = 'the platform was downgraded "
               "while it waited in the queue' WHERE state = 'queued'")
    op.drop_index("ix_sessions_state", table_name="sessions")
    _swap(STATES, LIVE)
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("placed_at")
