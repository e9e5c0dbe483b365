"""Typed runtime configuration with secrets that stay out of logs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, select

from orchestrator_db import values
from orchestrator_db.models.configuration import (
    Configuration,
    ConfigValue,
    decode_value,
    encode_value,
)
from orchestrator_db.repositories.base import Repository, reads
from orchestrator_db.sql.upsert import upsert_statement


class ConfigurationRepository(Repository[Configuration]):
    model_type = Configuration
    keyset = ("key",)
    protected_fields = frozenset({"value", "value_type", "is_secret"})

    async def set(
        self,
        key: str,
        value: ConfigValue,
        *,
        description: str | None = None,
        is_secret: bool | None = None,
    ) -> Configuration:
        """Create or replace ``key``; ``value_type`` is inferred from ``value``.

        ``description`` and ``is_secret`` keep their stored values when not
        given (a new key is not secret), so updating a secret's value never
        makes it public by accident. One upsert statement: safe against a
        concurrent ``set`` of the same key on both engines.
        """
        values.text(key, "key", min_length=1, max_length=values.MAX_INDEXED_TEXT)
        if description is not None:
            values.text(description, "description")
        if is_secret is not None:
            values.boolean(is_secret, "is_secret")
        value_type, text = encode_value(value)
        secret = bool(is_secret)
        # The value's column type keeps it out of logs, secret or not.
        row: dict[str, Any] = {
            "key": key,
            "value": text,
            "value_type": value_type,
            "description": description,
            "is_secret": secret,
        }
        changes = {"value": row["value"], "value_type": value_type}
        if description is not None:
            changes["description"] = description
        if is_secret is not None:
            changes["is_secret"] = secret
        table = Configuration.__table__
        assert isinstance(table, Table)
        statement = upsert_statement(self._ex.backend.name, table, row, ["key"], changes)
        await self._ex.execute(statement, entity=self.entity, key=key)
        reread = (
            select(Configuration)
            .where(Configuration.key == key)
            .execution_options(populate_existing=True)
        )
        found: list[Configuration] = await self._ex.scalars(reread, entity=self.entity)
        return found[0]

    @reads
    async def get_value(self, key: str) -> ConfigValue:
        """The value of ``key`` as the Python type it was set with. A secret
        string comes back as a :class:`~orchestrator_db.models.SecretText`:
        a ``str`` whose ``repr`` (and so any log of it) is masked."""
        return _value_of(await self.get(key))

    @reads
    async def get_value_or(self, key: str, default: ConfigValue) -> ConfigValue:
        config = await self.get_or_none(key)
        return default if config is None else _value_of(config)


def _value_of(config: Configuration) -> ConfigValue:
    value = decode_value(config.value_type, config.value)
    if isinstance(value, str) and not config.is_secret:
        return str(value)  # a plain str for a public value
    return value
