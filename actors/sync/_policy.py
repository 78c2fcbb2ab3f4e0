"""Sync configuration, in one place: the entity types, their parent relations, how each one's data is
validated (pydantic) and how a conflict on it is resolved (strategy and per-field policies).

A conflict is a change whose ``baseVersion`` is older than the server's version. Strategies:

    LAST_WRITE_WINS   the later ``clientTimestamp`` wins; equal or missing: the later arrival (the incoming one)
    CLIENT_WINS       the incoming change wins
    SERVER_WINS       the server's state stays
    MERGE             field by field (``fields``; a field not named there: ``default_field``); a delete wins
    MANUAL            nothing changes; an open conflict is kept for the user to resolve

Field policies (MERGE): LOCAL_WINS (the incoming device's value), MERGE_ARRAYS (the server's items, then the
incoming ones it lacks), MAX_VALUE (the larger), MONOTONIC (the later along ``order``).

Adding an entity type is adding an ``EntityPolicy`` here; nothing else names entity types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

Strategy = Literal["LAST_WRITE_WINS", "CLIENT_WINS", "SERVER_WINS", "MERGE", "MANUAL"]
FieldRule = Literal["LOCAL_WINS", "MERGE_ARRAYS", "MAX_VALUE", "MONOTONIC"]
STRATEGIES: tuple[Strategy, ...] = ("LAST_WRITE_WINS", "CLIENT_WINS", "SERVER_WINS", "MERGE", "MANUAL")
FIELD_RULES: tuple[FieldRule, ...] = ("LOCAL_WINS", "MERGE_ARRAYS", "MAX_VALUE", "MONOTONIC")


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldPolicy:
    rule: FieldRule
    order: tuple[str, ...] = ()  # MONOTONIC: the values from first to last

    def __post_init__(self) -> None:
        if self.rule not in FIELD_RULES:
            raise ValueError(f"unknown field policy {self.rule!r}")
        if (self.rule == "MONOTONIC") != bool(self.order):
            raise ValueError("MONOTONIC (and only it) takes an order")


@dataclass(frozen=True, slots=True, kw_only=True)
class Parent:
    entity_type: str
    field: str  # the child's data field holding the parent's entity id


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityPolicy:
    entity_type: str
    schema: type[BaseModel]  # validates ``data`` of creates and updates; extra fields are kept as given
    strategy: Strategy
    fields: Mapping[str, FieldPolicy] = field(default_factory=dict)
    default_field: FieldRule = "LOCAL_WINS"
    parent: Parent | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}")
        if self.fields and self.strategy != "MERGE":
            raise ValueError(f"{self.entity_type}: field policies need the MERGE strategy")
        if self.default_field == "MONOTONIC":
            raise ValueError("MONOTONIC needs an order: name the field")


class _Data(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class JournalEntry(_Data):
    text: StrictStr
    tags: list[StrictStr] = Field(default_factory=list)


class ConsumptionSession(_Data):
    status: Literal["active", "paused", "ended"]
    count: StrictInt = Field(ge=0)
    productId: StrictStr | None = None
    startAt: StrictStr | None = None
    endAt: StrictStr | None = None


class Consumption(_Data):
    sessionId: StrictStr = Field(min_length=1)
    at: StrictStr | None = None
    amount: float | None = None


class Goal(_Data):
    title: StrictStr
    target: Any = None
    metric: StrictStr | None = None


class Product(_Data):
    name: StrictStr


SESSION_STATUS = ("active", "paused", "ended")


@dataclass(frozen=True, slots=True)
class Policies:
    """The entity types by name, with their depth in the parent relation (parents first in a pull)."""

    types: Mapping[str, EntityPolicy]

    def __post_init__(self) -> None:
        for name, policy in self.types.items():
            if name != policy.entity_type:
                raise ValueError(f"policy {policy.entity_type!r} registered as {name!r}")
            if policy.parent is not None and policy.parent.entity_type not in self.types:
                raise ValueError(f"{name}: unknown parent type {policy.parent.entity_type!r}")
        for name in self.types:
            self.depth(name)  # refuses cycles

    def get(self, entity_type: str) -> EntityPolicy | None:
        return self.types.get(entity_type)

    def depth(self, entity_type: str) -> int:
        seen: list[str] = []
        policy = self.types.get(entity_type)
        while policy is not None and policy.parent is not None:
            if policy.entity_type in seen:
                raise ValueError(f"parent relations form a cycle: {seen}")
            seen.append(policy.entity_type)
            policy = self.types.get(policy.parent.entity_type)
        return len(seen)


def validate_data(policy: EntityPolicy, data: Any) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
    """``data`` checked against the type's schema: (normalized data, []) or (None, problems).
    Defaults other than None are filled in; fields the schema does not name are kept as given."""
    if not isinstance(data, dict):
        return None, [{"path": "data", "problem": "expected an object"}]
    try:
        model = policy.schema.model_validate(data)
    except ValidationError as exc:
        return None, [{"path": ".".join(["data", *(str(p) for p in err["loc"])]), "problem": err["msg"]}
                      for err in exc.errors(include_url=False, include_input=False, include_context=False)]
    out = dict(data)
    for name in type(model).model_fields:
        if name not in out and getattr(model, name) is not None:
            out[name] = getattr(model, name)  # a default worth storing (tags: []), not an absent optional
    return out, []


DEFAULT_POLICIES = Policies(MappingProxyType({p.entity_type: p for p in (
    EntityPolicy(entity_type="journal_entry", schema=JournalEntry, strategy="MERGE",
                 fields={"text": FieldPolicy(rule="LOCAL_WINS"), "tags": FieldPolicy(rule="MERGE_ARRAYS")}),
    EntityPolicy(entity_type="consumption_session", schema=ConsumptionSession, strategy="MERGE",
                 fields={"status": FieldPolicy(rule="MONOTONIC", order=SESSION_STATUS),
                         "count": FieldPolicy(rule="MAX_VALUE")}),
    EntityPolicy(entity_type="consumption", schema=Consumption, strategy="LAST_WRITE_WINS",
                 parent=Parent(entity_type="consumption_session", field="sessionId")),
    EntityPolicy(entity_type="goal", schema=Goal, strategy="MANUAL"),
    EntityPolicy(entity_type="product", schema=Product, strategy="SERVER_WINS"),
)}))

__all__ = ["DEFAULT_POLICIES", "FIELD_RULES", "SESSION_STATUS", "STRATEGIES", "EntityPolicy", "FieldPolicy",
           "FieldRule", "Parent", "Policies", "Strategy", "validate_data"]
