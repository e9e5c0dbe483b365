"""delete an unlinked task in one statement on PostgreSQL

Deleting a task that no dependency edge touches changes no other task's
facts, but only while no edge can appear meanwhile: on PostgreSQL the
graph's advisory lock must be held, and a statement that took it itself
would check for edges in the snapshot it took before the lock. This
function takes the lock, then deletes (its DELETE takes a new snapshot),
so that the delete is one statement that commits on its own (a call on the
Database: one round trip instead of four). SQLite has one writer and
needs none. The lock key is ``orchestrator_db.sql.queue.GRAPH_LOCK_KEY``
(``tests/test_migrations.py`` checks that they agree).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 22:40:00

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = """
CREATE FUNCTION orchestrator_delete_unlinked_task(task_key uuid) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(8030590385566908418);
    DELETE FROM tasks
    WHERE id = task_key
      AND NOT EXISTS (
          SELECT 1 FROM task_dependencies
          WHERE task_id = task_key OR depends_on_id = task_key
      );
    RETURN FOUND;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION orchestrator_delete_unlinked_task(uuid)")
