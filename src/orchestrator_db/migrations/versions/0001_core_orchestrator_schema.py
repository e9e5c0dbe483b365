"""core orchestrator schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 01:56:08.207388

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import orchestrator_db.types

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "configurations",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column(
            "value_type",
            sa.Enum(
                "string",
                "integer",
                "float",
                "boolean",
                "json",
                name="value_type",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "is_secret",
            sa.Boolean(create_constraint=True, name="is_secret"),
            server_default=sa.text("false"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            orchestrator_db.types.UTCDateTime(),
            server_default=orchestrator_db.types.utc_now_sql(),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            orchestrator_db.types.UTCDateTime(),
            server_default=orchestrator_db.types.utc_now_sql(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_configurations")),
    )
    op.create_trigger(
        "trg_configurations_updated_at",
        "configurations",
        sqlite=(
            "CREATE TRIGGER trg_configurations_updated_at\n"
            "AFTER UPDATE ON configurations\n"
            "FOR EACH ROW\n"
            "WHEN NEW.updated_at IS OLD.updated_at\n"
            "  AND NEW.updated_at IS NOT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')\n"
            "BEGIN\n"
            "  UPDATE configurations SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE rowid = NEW.rowid;\n"
            "END"
        ),
        postgresql=(
            (
                "CREATE OR REPLACE FUNCTION trg_configurations_updated_at()\n"
                " RETURNS trigger\n"
                " LANGUAGE plpgsql\n"
                "AS $function$\n"
                "BEGIN\n"
                "  IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN\n"
                "    NEW.updated_at := date_trunc('milliseconds', clock_timestamp());\n"
                "  END IF;\n"
                "  RETURN NEW;\n"
                "END;\n"
                "$function$"
            ),
            "CREATE TRIGGER trg_configurations_updated_at BEFORE UPDATE ON configurations FOR EACH ROW EXECUTE FUNCTION trg_configurations_updated_at()",
        ),
        postgresql_function="trg_configurations_updated_at",
    )
    with op.batch_alter_table("configurations", schema=None) as batch_op:
        batch_op.create_index("idx_configurations_secret", ["is_secret"], unique=False)
        batch_op.create_index("idx_configurations_type", ["value_type"], unique=False)
        batch_op.create_index("idx_configurations_updated", ["updated_at"], unique=False)

    op.create_table(
        "sessions",
        sa.Column("id", orchestrator_db.types.UUIDString(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column(
            "connection_type",
            sa.Enum(
                "websocket",
                "http",
                "grpc",
                name="connection_type",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "is_active",
            sa.Boolean(create_constraint=True, name="is_active"),
            server_default=sa.text("true"),
            nullable=False,
        ),
        sa.Column("metadata", orchestrator_db.types.JSONDocument(), nullable=True),
        sa.Column(
            "last_heartbeat",
            orchestrator_db.types.UTCDateTime(),
            server_default=orchestrator_db.types.utc_now_sql(),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            orchestrator_db.types.UTCDateTime(),
            server_default=orchestrator_db.types.utc_now_sql(),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            orchestrator_db.types.UTCDateTime(),
            server_default=orchestrator_db.types.utc_now_sql(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    op.create_trigger(
        "trg_sessions_updated_at",
        "sessions",
        sqlite=(
            "CREATE TRIGGER trg_sessions_updated_at\n"
            "AFTER UPDATE ON sessions\n"
            "FOR EACH ROW\n"
            "WHEN NEW.updated_at IS OLD.updated_at\n"
            "  AND NEW.updated_at IS NOT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')\n"
            "BEGIN\n"
            "  UPDATE sessions SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE rowid = NEW.rowid;\n"
            "END"
        ),
        postgresql=(
            (
                "CREATE OR REPLACE FUNCTION trg_sessions_updated_at()\n"
                " RETURNS trigger\n"
                " LANGUAGE plpgsql\n"
                "AS $function$\n"
                "BEGIN\n"
                "  IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN\n"
                "    NEW.updated_at := date_trunc('milliseconds', clock_timestamp());\n"
                "  END IF;\n"
                "  RETURN NEW;\n"
                "END;\n"
                "$function$"
            ),
            "CREATE TRIGGER trg_sessions_updated_at BEFORE UPDATE ON sessions FOR EACH ROW EXECUTE FUNCTION trg_sessions_updated_at()",
        ),
        postgresql_function="trg_sessions_updated_at",
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index("idx_sessions_active", ["is_active", "last_heartbeat"], unique=False)
        batch_op.create_index("idx_sessions_client", ["client_id"], unique=False)
        batch_op.create_index("idx_sessions_created", ["created_at", "id"], unique=False)
        batch_op.create_index("idx_sessions_heartbeat", ["last_heartbeat"], unique=False)
        batch_op.create_index("idx_sessions_user", ["user_id"], unique=False)

    op.create_table(
        "tasks",
        sa.Column("id", orchestrator_db.types.UUIDString(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("task_type", sa.Text(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "running",
                "completed",
                "failed",
                "cancelled",
                name="status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="pending",
            nullable=False,
        ),
        sa.Column("config", orchestrator_db.types.JSONDocument(), nullable=False),
        sa.Column("metadata", orchestrator_db.types.JSONDocument(), nullable=True),
        sa.Column("workspace_path", sa.Text(), nullable=True),
        sa.Column("started_at", orchestrator_db.types.UTCDateTime(), nullable=True),
        sa.Column("completed_at", orchestrator_db.types.UTCDateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            orchestrator_db.types.UTCDateTime(),
            server_default=orchestrator_db.types.utc_now_sql(),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            orchestrator_db.types.UTCDateTime(),
            server_default=orchestrator_db.types.utc_now_sql(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    op.create_trigger(
        "trg_tasks_updated_at",
        "tasks",
        sqlite=(
            "CREATE TRIGGER trg_tasks_updated_at\n"
            "AFTER UPDATE ON tasks\n"
            "FOR EACH ROW\n"
            "WHEN NEW.updated_at IS OLD.updated_at\n"
            "  AND NEW.updated_at IS NOT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')\n"
            "BEGIN\n"
            "  UPDATE tasks SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE rowid = NEW.rowid;\n"
            "END"
        ),
        postgresql=(
            (
                "CREATE OR REPLACE FUNCTION trg_tasks_updated_at()\n"
                " RETURNS trigger\n"
                " LANGUAGE plpgsql\n"
                "AS $function$\n"
                "BEGIN\n"
                "  IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN\n"
                "    NEW.updated_at := date_trunc('milliseconds', clock_timestamp());\n"
                "  END IF;\n"
                "  RETURN NEW;\n"
                "END;\n"
                "$function$"
            ),
            "CREATE TRIGGER trg_tasks_updated_at BEFORE UPDATE ON tasks FOR EACH ROW EXECUTE FUNCTION trg_tasks_updated_at()",
        ),
        postgresql_function="trg_tasks_updated_at",
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index("idx_tasks_created", ["created_at", "id"], unique=False)
        batch_op.create_index("idx_tasks_status", ["status"], unique=False)
        batch_op.create_index("idx_tasks_type", ["task_type"], unique=False)
        batch_op.create_index("idx_tasks_workspace", ["workspace_path"], unique=False)

    op.create_table(
        "workflows",
        sa.Column("id", orchestrator_db.types.UUIDString(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("definition", orchestrator_db.types.JSONDocument(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "draft",
                "active",
                "archived",
                "paused",
                name="status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="draft",
            nullable=False,
        ),
        sa.Column(
            "created_at",
            orchestrator_db.types.UTCDateTime(),
            server_default=orchestrator_db.types.utc_now_sql(),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            orchestrator_db.types.UTCDateTime(),
            server_default=orchestrator_db.types.utc_now_sql(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
    )
    op.create_trigger(
        "trg_workflows_updated_at",
        "workflows",
        sqlite=(
            "CREATE TRIGGER trg_workflows_updated_at\n"
            "AFTER UPDATE ON workflows\n"
            "FOR EACH ROW\n"
            "WHEN NEW.updated_at IS OLD.updated_at\n"
            "  AND NEW.updated_at IS NOT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')\n"
            "BEGIN\n"
            "  UPDATE workflows SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE rowid = NEW.rowid;\n"
            "END"
        ),
        postgresql=(
            (
                "CREATE OR REPLACE FUNCTION trg_workflows_updated_at()\n"
                " RETURNS trigger\n"
                " LANGUAGE plpgsql\n"
                "AS $function$\n"
                "BEGIN\n"
                "  IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN\n"
                "    NEW.updated_at := date_trunc('milliseconds', clock_timestamp());\n"
                "  END IF;\n"
                "  RETURN NEW;\n"
                "END;\n"
                "$function$"
            ),
            "CREATE TRIGGER trg_workflows_updated_at BEFORE UPDATE ON workflows FOR EACH ROW EXECUTE FUNCTION trg_workflows_updated_at()",
        ),
        postgresql_function="trg_workflows_updated_at",
    )
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.create_index("idx_workflows_created", ["created_at", "id"], unique=False)
        batch_op.create_index("idx_workflows_name", ["name"], unique=False)
        batch_op.create_index("idx_workflows_status", ["status"], unique=False)

    op.create_table(
        "tool_executions",
        sa.Column("id", orchestrator_db.types.UUIDString(), nullable=False),
        sa.Column("task_id", orchestrator_db.types.UUIDString(), nullable=False),
        sa.Column("tool_name", sa.Text(), nullable=False),
        sa.Column("arguments", orchestrator_db.types.JSONDocument(), nullable=False),
        sa.Column("output", orchestrator_db.types.JSONDocument(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "running",
                "completed",
                "failed",
                "timeout",
                name="status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="pending",
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("completed_at", orchestrator_db.types.UTCDateTime(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            orchestrator_db.types.UTCDateTime(),
            server_default=orchestrator_db.types.utc_now_sql(),
            nullable=False,
        ),
        sa.CheckConstraint(
            "duration_ms >= 0", name=op.f("ck_tool_executions_duration_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_tool_executions_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tool_executions")),
    )
    with op.batch_alter_table("tool_executions", schema=None) as batch_op:
        batch_op.create_index("idx_tool_executions_created", ["created_at", "id"], unique=False)
        batch_op.create_index("idx_tool_executions_status", ["status"], unique=False)
        batch_op.create_index("idx_tool_executions_task", ["task_id", "created_at"], unique=False)
        batch_op.create_index("idx_tool_executions_tool", ["tool_name"], unique=False)

    op.create_table(
        "workflow_tasks",
        sa.Column("workflow_id", orchestrator_db.types.UUIDString(), nullable=False),
        sa.Column("task_id", orchestrator_db.types.UUIDString(), nullable=False),
        sa.Column("sequence", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "created_at",
            orchestrator_db.types.UTCDateTime(),
            server_default=orchestrator_db.types.utc_now_sql(),
            nullable=False,
        ),
        sa.CheckConstraint("sequence >= 0", name=op.f("ck_workflow_tasks_sequence_not_negative")),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_workflow_tasks_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_workflow_tasks_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workflow_id", "task_id", name=op.f("pk_workflow_tasks")),
    )
    with op.batch_alter_table("workflow_tasks", schema=None) as batch_op:
        batch_op.create_index(
            "idx_workflow_tasks_sequence", ["workflow_id", "sequence"], unique=False
        )
        batch_op.create_index("idx_workflow_tasks_task", ["task_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("workflow_tasks", schema=None) as batch_op:
        batch_op.drop_index("idx_workflow_tasks_task")
        batch_op.drop_index("idx_workflow_tasks_sequence")

    op.drop_table("workflow_tasks")
    with op.batch_alter_table("tool_executions", schema=None) as batch_op:
        batch_op.drop_index("idx_tool_executions_tool")
        batch_op.drop_index("idx_tool_executions_task")
        batch_op.drop_index("idx_tool_executions_status")
        batch_op.drop_index("idx_tool_executions_created")

    op.drop_table("tool_executions")
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.drop_index("idx_workflows_status")
        batch_op.drop_index("idx_workflows_name")
        batch_op.drop_index("idx_workflows_created")

    op.drop_trigger(
        "trg_workflows_updated_at",
        "workflows",
        postgresql_function="trg_workflows_updated_at",
    )
    op.drop_table("workflows")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("idx_tasks_workspace")
        batch_op.drop_index("idx_tasks_type")
        batch_op.drop_index("idx_tasks_status")
        batch_op.drop_index("idx_tasks_created")

    op.drop_trigger(
        "trg_tasks_updated_at",
        "tasks",
        postgresql_function="trg_tasks_updated_at",
    )
    op.drop_table("tasks")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index("idx_sessions_user")
        batch_op.drop_index("idx_sessions_heartbeat")
        batch_op.drop_index("idx_sessions_created")
        batch_op.drop_index("idx_sessions_client")
        batch_op.drop_index("idx_sessions_active")

    op.drop_trigger(
        "trg_sessions_updated_at",
        "sessions",
        postgresql_function="trg_sessions_updated_at",
    )
    op.drop_table("sessions")
    with op.batch_alter_table("configurations", schema=None) as batch_op:
        batch_op.drop_index("idx_configurations_updated")
        batch_op.drop_index("idx_configurations_type")
        batch_op.drop_index("idx_configurations_secret")

    op.drop_trigger(
        "trg_configurations_updated_at",
        "configurations",
        postgresql_function="trg_configurations_updated_at",
    )
    op.drop_table("configurations")
