"""The unit of work as callers see it: a transaction with its repositories hanging off it."""

from __future__ import annotations

from functools import cached_property

from ._repos import (
    AiReports,
    AiUsageLog,
    Changes,
    Checkpoints,
    Conflicts,
    DeadLetters,
    Devices,
    Entities,
    Exports,
    Ingest,
    Outbox,
    ProductImpacts,
    Rollups,
    Samples,
    SessionImpacts,
    Sessions,
    Sleep,
    SyncOps,
    Users,
    Watermarks,
)
from ._tx import TransactionBase

__all__ = ["Transaction"]


class Transaction(TransactionBase):
    """A unit of work with its repositories (each created on first use).

    Abstract: each backend supplies the crossing (``_cross``) and its ``dialect``.
    """

    @cached_property
    def users(self) -> Users:
        return Users(self)

    @cached_property
    def samples(self) -> Samples:
        return Samples(self)

    @cached_property
    def ingest(self) -> Ingest:
        return Ingest(self)

    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(self)

    @cached_property
    def checkpoints(self) -> Checkpoints:
        return Checkpoints(self)

    @cached_property
    def rollups(self) -> Rollups:
        return Rollups(self)

    @cached_property
    def sleep(self) -> Sleep:
        return Sleep(self)

    @cached_property
    def watermarks(self) -> Watermarks:
        return Watermarks(self)

    @cached_property
    def entities(self) -> Entities:
        return Entities(self)

    @cached_property
    def sync_ops(self) -> SyncOps:
        return SyncOps(self)

    @cached_property
    def changes(self) -> Changes:
        return Changes(self)

    @cached_property
    def devices(self) -> Devices:
        return Devices(self)

    @cached_property
    def conflicts(self) -> Conflicts:
        return Conflicts(self)

    @cached_property
    def exports(self) -> Exports:
        return Exports(self)

    @cached_property
    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self)

    @cached_property
    def session_impacts(self) -> SessionImpacts:
        return SessionImpacts(self)

    @cached_property
    def product_impacts(self) -> ProductImpacts:
        return ProductImpacts(self)

    @cached_property
    def sessions(self) -> Sessions:
        return Sessions(self)

    @cached_property
    def ai_reports(self) -> AiReports:
        return AiReports(self)

    @cached_property
    def ai_usage(self) -> AiUsageLog:
        return AiUsageLog(self)
