"""Alembic environment of orchestrator_db.

Used both by the ``alembic`` command line (with ``alembic.ini``) and by
``Database.migrate()``, which hands over an open connection through
``config.attributes["connection"]``. Either way the same function configures
the migration context, so the CLI and the library migrate identically.
"""

from __future__ import annotations

import asyncio
import logging.config

from alembic import context
from sqlalchemy.pool import NullPool

from orchestrator_db._execution.engines import create_engine
from orchestrator_db.migrations.runner import configure_and_run, resolve_url
from orchestrator_db.settings import DatabaseSettings, normalize_url, split_url

config = context.config
# Tools and tests may compare against other models than the package's.
target_metadata = config.attributes.get("target_metadata")

if (
    config.config_file_name is not None
    and "connection" not in config.attributes
    and config.file_config.has_section("loggers")  # a minimal alembic.ini has none
):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def run_offline() -> None:
    url = resolve_url(config, context.get_x_argument(as_dictionary=True))
    configure_and_run(context, url=url, target_metadata=target_metadata)


async def run_online() -> None:
    url, from_url = split_url(
        normalize_url(resolve_url(config, context.get_x_argument(as_dictionary=True)))
    )
    settings = DatabaseSettings(extra_engine_options={"poolclass": NullPool}, **from_url)
    engine = create_engine(url, settings)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(
                lambda sync: configure_and_run(
                    context, connection=sync, target_metadata=target_metadata
                )
            )
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_offline()
elif (connection := config.attributes.get("connection")) is not None:
    configure_and_run(context, connection=connection, target_metadata=target_metadata)
else:
    asyncio.run(run_online())
