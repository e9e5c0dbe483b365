"""Typed runtime configuration with secrets that stay out of logs."""

from __future__ import annotations

import json
import math
from typing import Any

from sqlalchemy import Table, select

from orchestrator_db.errors import NotFoundError, ValidationError
from orchestrator_db.models.configuration import Configuration, SecretText, ValueType
from orchestrator_db.repositories.base import Repository
from orchestrator_db.sql.upsert import upsert_statement

ConfigValue = str | int | float | bool | dict[str, Any] | list[Any]


def encode_value(value: object) -> tuple[ValueType, str]:
    """The stored text and ``value_type`` of a Python value."""
    # bool before int: True is an int too.
    if isinstance(value, bool):
        return ValueType.BOOLEAN, "true" if value else "false"
    if isinstance(value, int):
        return ValueType.INTEGER, str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"configuration floats must be finite, got {value!r}")
        return ValueType.FLOAT, repr(value)
    if isinstance(value, dict | list):
        try:
            return ValueType.JSON, json.dumps(value, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValidationError(f"configuration value is not JSON: {error}") from None
    if isinstance(value, str):
        return ValueType.STRING, value
    raise ValidationError(
        f"configuration values are str, int, float, bool, dict or list; got {type(value).__name__}"
    )


def decode_value(value_type: ValueType, text: str) -> ConfigValue:
    """The Python value of stored text."""
    if value_type is ValueType.BOOLEAN:
        return text == "true"
    if value_type is ValueType.INTEGER:
        return int(text)
    if value_type is ValueType.FLOAT:
        return float(text)
    if value_type is ValueType.JSON:
        decoded: dict[str, Any] | list[Any] = json.loads(text)
        return decoded
    return text


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
        if not isinstance(key, str) or not key:
            raise ValidationError("configuration key must be a non-empty string", field="key")
        value_type, text = encode_value(value)
        secret = bool(is_secret)
        # Unless the caller says the value is public, it may be replacing a
        # secret: keep it out of statement logs either way.
        values: dict[str, Any] = {
            "key": key,
            "value": text if is_secret is False else SecretText(text),
            "value_type": value_type,
            "description": description,
            "is_secret": secret,
        }
        changes = {"value": values["value"], "value_type": value_type}
        if description is not None:
            changes["description"] = description
        if is_secret is not None:
            changes["is_secret"] = secret
        table = Configuration.__table__
        assert isinstance(table, Table)
        statement = upsert_statement(self._ex.backend.name, table, values, ["key"], changes)
        await self._ex.execute(statement, entity=self.entity, key=key)
        reread = (
            select(Configuration)
            .where(Configuration.key == key)
            .execution_options(populate_existing=True)
        )
        found: list[Configuration] = await self._ex.scalars(reread, entity=self.entity)
        return found[0]

    async def get_value(self, key: str) -> ConfigValue:
        """The value of ``key`` as the Python type it was set with."""
        config = await self.get(key)
        return decode_value(config.value_type, config.value)

    async def get_value_or(self, key: str, default: ConfigValue) -> ConfigValue:
        try:
            return await self.get_value(key)
        except NotFoundError:
            return default
