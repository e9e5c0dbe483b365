"""Runtime configuration: a typed key-value store with secrets."""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import Boolean, Index, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from orchestrator_db.models.base import Base, Timestamps, enum_type


class ValueType(enum.StrEnum):
    STRING = "string"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    JSON = "json"


class SecretText(str):
    """A ``str`` whose ``repr`` hides it.

    Secret configuration values are passed to the driver as ``SecretText``, so
    SQLAlchemy's statement logging and the parameters quoted in driver errors
    (both use ``repr``) show ``'***'`` instead of the value. The driver, ``str``
    and comparisons still see the real text.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


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
    value: Mapped[str] = mapped_column(Text, nullable=False)
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
        if name == "value" and loaded.get("is_secret", True):
            return "'***'"
        return super()._repr_value(name, loaded)
