"""Runtime configuration: a typed key-value store with secrets."""

from __future__ import annotations

import enum
import json
import math
from typing import Any

from sqlalchemy import Boolean, Index, Text, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from orchestrator_db import values
from orchestrator_db.errors import DatabaseError, ValidationError
from orchestrator_db.models.base import Base, Timestamps, enum_type


class ValueType(enum.StrEnum):
    STRING = "string"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    JSON = "json"


class SecretText(str):
    """A ``str`` whose ``repr`` hides it.

    Configuration values travel as ``SecretText`` (see :class:`ConfigurationText`),
    so SQLAlchemy's statement and row logging, aiosqlite's debug log and the
    parameters quoted in driver errors (all of which use ``repr``) show
    ``'***'`` instead of the value. The driver, ``str`` and comparisons still
    see the real text.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


class ConfigurationText(TypeDecorator[str]):
    """The text of a configuration value: bound to statements and read from
    rows as :class:`SecretText`, whether the entry is secret or not (a column
    type cannot see the row's ``is_secret``, and a value about to become
    secret may be written by a statement that does not say so)."""

    impl = Text
    cache_ok = True

    def validate(self, value: Any, field: str | None = None) -> str:
        return values.text(value, field)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else SecretText(self.validate(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else SecretText(value)

    @property
    def python_type(self) -> type[str]:
        return str


ConfigValue = str | int | float | bool | dict[str, Any] | list[Any]
# 4,000 decimal digits: Python itself converts no longer integers to text.
_MAX_INTEGER_BITS = 13_287


def encode_value(value: object) -> tuple[ValueType, str]:
    """The stored text and ``value_type`` of a Python value (checked as the
    JSON columns check theirs: see :mod:`orchestrator_db.values`)."""
    # bool before int: True is an int too.
    if isinstance(value, bool):
        return ValueType.BOOLEAN, "true" if value else "false"
    if isinstance(value, int):
        if value.bit_length() > _MAX_INTEGER_BITS:
            raise ValidationError("configuration integers have at most 4,000 digits", field="value")
        return ValueType.INTEGER, str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"configuration floats must be finite, got {value!r}")
        return ValueType.FLOAT, repr(value)
    if isinstance(value, dict | list):
        values.json_value(value, "value")
        return ValueType.JSON, json.dumps(value, separators=(",", ":"), allow_nan=False)
    if isinstance(value, str):
        return ValueType.STRING, values.text(value, "value")
    raise ValidationError(
        f"configuration values are str, int, float, bool, dict or list; got {type(value).__name__}"
    )


def decode_value(value_type: ValueType, text: str) -> ConfigValue:
    """The Python value of stored text (a string comes back as it is read:
    a :class:`SecretText`)."""
    try:
        if value_type is ValueType.BOOLEAN:
            return text == "true"
        if value_type is ValueType.INTEGER:
            return int(text)
        if value_type is ValueType.FLOAT:
            return float(text)
        if value_type is ValueType.JSON:
            decoded: dict[str, Any] | list[Any] = json.loads(text)
            return decoded
    except (ValueError, RecursionError):
        raise DatabaseError(
            f"a stored configuration value is not a valid {value_type.value}"
        ) from None
    return text


class Configuration(Timestamps, Base):
    """One configuration entry; ``value`` is text, ``value_type`` says how to read it.

    ``repr`` and ``str`` never show the value of a secret entry.
    """

    __tablename__ = "configurations"
    __table_args__ = (
        Index("idx_configurations_type", "value_type"),
        Index("idx_configurations_secret", "is_secret"),
        Index("idx_configurations_updated", "updated_at"),
    )

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[str] = mapped_column(ConfigurationText(), nullable=False)
    value_type: Mapped[ValueType] = mapped_column(
        enum_type(ValueType, "value_type"), nullable=False
    )
    description: Mapped[str | None] = mapped_column(Text)
    is_secret: Mapped[bool] = mapped_column(
        Boolean(create_constraint=True, name="is_secret"),
        nullable=False,
        default=False,
        server_default=text("false"),
    )

    __repr_attrs__ = ("value", "value_type", "is_secret")

    def _repr_value(self, name: str, loaded: dict[str, Any]) -> str:
        # A value whose secrecy is unknown (not loaded) is treated as secret.
        if name == "value" and "value" in loaded:
            return "'***'" if loaded.get("is_secret", True) else repr(str(loaded["value"]))
        return super()._repr_value(name, loaded)
