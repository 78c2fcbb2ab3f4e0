"""Device sync: the server's copy of synced entities, exactly-once client operations, the
per-user change log pulls read, each device's acknowledged cursor, and conflicts kept for a
person to resolve."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from .. import _validate as v
from .._errors import ConflictError, InvalidData, NotFound
from .._model import Change, ChangeIn, Conflict, DeviceState, Json, SyncEntity
from .._sql import Steps, execute, fetch, fetchrow, fetchval, many
from .._time import aware
from .._tx import Const, Op
from .base import Repo, Row

__all__ = ["Changes", "Conflicts", "Devices", "Entities", "SyncOps"]

_ENTITY_COLS = "user_id, entity_type, entity_id, version, data, deleted, updated_at, client_ts"
_INSERT_ENTITY = (
    "INSERT INTO sync_entities (user_id, entity_type, entity_id, version, data, deleted, created_at,"
    " updated_at, client_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)"
)
_UPSERT_ENTITY = (
    _INSERT_ENTITY + " ON CONFLICT (user_id, entity_type, entity_id)"
    " DO UPDATE SET version = excluded.version, data = excluded.data, deleted = excluded.deleted,"
    " updated_at = excluded.updated_at, client_ts = excluded.client_ts"
)
_PUT_ENTITY = _UPSERT_ENTITY + f" RETURNING {_ENTITY_COLS}"
_CREATE_ENTITY = (
    _INSERT_ENTITY + f" ON CONFLICT (user_id, entity_type, entity_id) DO NOTHING RETURNING {_ENTITY_COLS}"
)
_UPDATE_ENTITY_AT_VERSION = (
    "UPDATE sync_entities SET version = $4, data = $5, deleted = $6, updated_at = $7, client_ts = $8"
    " WHERE user_id = $1 AND entity_type = $2 AND entity_id = $3 AND version = $9"
    f" RETURNING {_ENTITY_COLS}"
)
_ENTITY_VERSION = (
    "SELECT version FROM sync_entities WHERE user_id = $1 AND entity_type = $2 AND entity_id = $3"
)
_GET_ENTITY = (
    f"SELECT {_ENTITY_COLS} FROM sync_entities WHERE user_id = $1 AND entity_type = $2 AND entity_id = $3"
)
_PG_GET_ENTITIES = (
    f"SELECT {_ENTITY_COLS} FROM sync_entities WHERE user_id = $1"
    " AND (entity_type, entity_id) IN (SELECT * FROM unnest($2::text[], $3::text[]))"
)
_SQLITE_GET_ENTITIES = (
    f"SELECT {_ENTITY_COLS} FROM sync_entities WHERE user_id = $1 AND (entity_type, entity_id)"
    " IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each($2))"
)
# list() appends its filters, then " ORDER BY entity_type, entity_id LIMIT $n".
_LIST_ENTITIES = f"SELECT {_ENTITY_COLS} FROM sync_entities WHERE user_id = $1"

_PG_GET_OP_RESULTS = (
    "SELECT client_op_id, result FROM sync_operations WHERE user_id = $1 AND device_id = $2"
    " AND client_op_id = ANY($3::text[])"
)
_SQLITE_GET_OP_RESULTS = (
    "SELECT client_op_id, result FROM sync_operations WHERE user_id = $1 AND device_id = $2"
    " AND client_op_id IN (SELECT value FROM json_each($3))"
)
_PG_GET_USER_OP_RESULTS = (
    "SELECT client_op_id, result FROM sync_operations WHERE user_id = $1 AND client_op_id = ANY($2::text[])"
)
_SQLITE_GET_USER_OP_RESULTS = (
    "SELECT client_op_id, result FROM sync_operations WHERE user_id = $1"
    " AND client_op_id IN (SELECT value FROM json_each($2))"
)
# Any unique key: (user, device, op) and, since migration 4, (user, op).
_RECORD_OP_RESULT = (
    "INSERT INTO sync_operations (user_id, device_id, client_op_id, result, created_at)"
    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"
)

_CHANGE_COLS = "user_id, seq, entity_type, entity_id, op, version, data, deleted, device_id, changed_at"
_ADVANCE_SEQUENCE = (
    "INSERT INTO sync_sequences (user_id, last_seq) VALUES ($1, $2) ON CONFLICT (user_id)"
    " DO UPDATE SET last_seq = sync_sequences.last_seq + excluded.last_seq RETURNING last_seq"
)
_APPEND_CHANGE = (
    f"INSERT INTO sync_changes ({_CHANGE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
)
_READ_CHANGES = (
    f"SELECT {_CHANGE_COLS} FROM sync_changes WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
)
_LATEST_SEQ = "SELECT last_seq FROM sync_sequences WHERE user_id = $1"

_DEVICE_COLS = "user_id, device_id, acked_seq, updated_at"
# Held until the transaction ends (no session state, no connection of its own); the schema is part
# of the key so schemas sharing a database do not serialize each other.
_PG_DEVICE_XACT_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtextextended('vigil.sync' || chr(31) || current_schema()"
    " || chr(31) || $1 || chr(31) || $2, 0))"
)
_PG_DEVICE_XACT_TRY_LOCK = _PG_DEVICE_XACT_LOCK.replace("pg_advisory_xact_lock", "pg_try_advisory_xact_lock")
# Takes the user's change-log counter row lock up front (creating the row if need be): every
# writer of the user's entities then serializes on it, so versions and seqs follow commit order.
_LOCK_SEQUENCE = (
    "INSERT INTO sync_sequences (user_id, last_seq) VALUES ($1, 0) ON CONFLICT (user_id)"
    " DO UPDATE SET last_seq = sync_sequences.last_seq RETURNING last_seq"
)
_GET_DEVICE = f"SELECT {_DEVICE_COLS} FROM sync_devices WHERE user_id = $1 AND device_id = $2"
_ACKNOWLEDGE = (
    "INSERT INTO sync_devices (user_id, device_id, acked_seq, created_at, updated_at)"
    " VALUES ($1, $2, $3, $4, $4) ON CONFLICT (user_id, device_id) DO UPDATE SET"
    " acked_seq = CASE WHEN excluded.acked_seq > sync_devices.acked_seq"
    " THEN excluded.acked_seq ELSE sync_devices.acked_seq END, updated_at = excluded.updated_at"
    f" RETURNING {_DEVICE_COLS}"
)

_CONFLICT_COLS = (
    "id, user_id, device_id, entity_type, entity_id, server_version, base_version, server_data,"
    " client_data, status, resolution, resolved_data, created_at, resolved_at"
)
_OPEN_CONFLICT = (
    f"INSERT INTO sync_conflicts ({_CONFLICT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
    f" 'open', NULL, NULL, $10, NULL) RETURNING {_CONFLICT_COLS}"
)
_GET_CONFLICT = f"SELECT {_CONFLICT_COLS} FROM sync_conflicts WHERE user_id = $1 AND id = $2"
# list() appends " AND status = $3" when filtering, then " ORDER BY created_at, id LIMIT $2".
_LIST_CONFLICTS = f"SELECT {_CONFLICT_COLS} FROM sync_conflicts WHERE user_id = $1"
_RESOLVE_CONFLICT = (
    "UPDATE sync_conflicts SET status = 'resolved', resolution = $3, resolved_data = $4,"
    f" resolved_at = $5 WHERE user_id = $1 AND id = $2 AND status = 'open' RETURNING {_CONFLICT_COLS}"
)
_CONFLICT_STATUS = "SELECT status FROM sync_conflicts WHERE user_id = $1 AND id = $2"

# Recorded operation results past retention, oldest first, a batch at a time.
_PURGE_OPS = (
    "DELETE FROM sync_operations WHERE (user_id, device_id, client_op_id) IN (SELECT user_id, device_id,"
    " client_op_id FROM sync_operations WHERE created_at < $1 ORDER BY created_at LIMIT $2)"
)


class Entities(Repo):
    """The server's copy of every synced entity, keyed by (user, entity_type, entity_id)."""

    __slots__ = ()

    def _entity(self, row: Row) -> SyncEntity:
        return SyncEntity(
            row["user_id"],
            row["entity_type"],
            row["entity_id"],
            row["version"],
            v.load_json(row["data"]),
            bool(row["deleted"]),
            self._d.ts_out(row["updated_at"]),
            self._d.opt_ts_out(row["client_ts"]),
        )

    def _row(self, field: str, e: SyncEntity, now: Any) -> tuple[Any, ...]:
        if not isinstance(e, SyncEntity):
            raise InvalidData(field, "expected a SyncEntity")
        if type(e.deleted) is not bool:
            raise InvalidData(f"{field}.deleted", "expected a bool")
        return (
            self._id(f"{field}.user_id", e.user_id),
            self._name(f"{field}.entity_type", e.entity_type),
            self._id(f"{field}.entity_id", e.entity_id),
            v.integer(f"{field}.version", e.version),
            self._json(f"{field}.data", e.data),
            e.deleted,
            now,
            None if e.client_ts is None else self._d.ts(aware("client_ts", e.client_ts)),
        )

    def get(self, user_id: str, entity_type: str, entity_id: str) -> Op[SyncEntity | None]:
        return self._op(
            fetchrow(
                _GET_ENTITY,
                self._id("user_id", user_id),
                self._name("entity_type", entity_type),
                self._id("entity_id", entity_id),
            ),
            post=lambda row: None if row is None else self._entity(row),
        )

    def get_many(
        self, user_id: str, keys: Sequence[tuple[str, str]]
    ) -> Op[dict[tuple[str, str], SyncEntity]]:
        """The existing ones among (entity_type, entity_id) keys, in one statement."""
        user = self._id("user_id", user_id)
        v.batch("keys", keys, self._limits)
        pairs = list(
            dict.fromkeys(
                (self._name(f"keys[{i}][0]", k[0]), self._id(f"keys[{i}][1]", k[1]))
                for i, k in enumerate(keys)
            )
        )
        if not pairs:
            return self._op(Const({}))
        if self._d.name == "postgresql":
            types, ids = (list(c) for c in zip(*pairs, strict=True))
            cmd = fetch(_PG_GET_ENTITIES, user, types, ids)
        else:
            cmd = fetch(_SQLITE_GET_ENTITIES, user, v.dump_json("keys", pairs, 2**62))
        return self._op(
            cmd, post=lambda rows: {(r["entity_type"], r["entity_id"]): self._entity(r) for r in rows}
        )

    def put(self, entity: SyncEntity, *, expected_version: int | None = None) -> Op[SyncEntity]:
        """Store ``entity`` as given (its version included) and return the stored row.

        ``expected_version``: None writes unconditionally; 0 requires that the entity does
        not exist yet; n requires the stored version to be n. Otherwise ConflictError
        (NotFound if n > 0 and there is no such entity)."""
        row = self._row("entity", entity, self._d.ts(self._now()))
        if expected_version is None:
            return self._op(fetchrow(_PUT_ENTITY, *row), post=lambda r: self._entity(r))
        expected = v.integer("expected_version", expected_version)

        def steps() -> Steps[SyncEntity]:
            if expected == 0:
                stored = yield fetchrow(_CREATE_ENTITY, *row)
            else:
                stored = yield fetchrow(_UPDATE_ENTITY_AT_VERSION, *row, expected)
            if stored is not None:
                return self._entity(stored)
            current = yield fetchval(_ENTITY_VERSION, *row[:3])
            if current is None:
                raise NotFound(f"no {row[1]} {row[2]!r}")
            raise ConflictError(f"{row[1]} {row[2]!r} is at version {current}, expected {expected}")

        return self._op(steps)

    def put_many(self, entities: Sequence[SyncEntity]) -> Op[int]:
        """Store every entity unconditionally (one batched statement); returns the count."""
        v.batch("entities", entities, self._limits)
        now = self._d.ts(self._now())
        rows = [self._row(f"entities[{i}]", e, now) for i, e in enumerate(entities)]
        return self._op(many(_UPSERT_ENTITY, rows) if rows else Const(None), post=lambda _: len(rows))

    def list(
        self,
        user_id: str,
        *,
        entity_type: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int = 500,
    ) -> Op[list[SyncEntity]]:
        """Entities ordered by (entity_type, entity_id); pass the last key as ``after``."""
        args: list[Any] = [self._id("user_id", user_id)]
        sql = _LIST_ENTITIES
        if entity_type is not None:
            args.append(self._name("entity_type", entity_type))
            sql += f" AND entity_type = ${len(args)}"
        if after is not None:
            args += [self._name("after[0]", after[0]), self._id("after[1]", after[1])]
            sql += f" AND (entity_type, entity_id) > (${len(args) - 1}, ${len(args)})"
        args.append(self._limit(limit))
        return self._op(
            fetch(sql + f" ORDER BY entity_type, entity_id LIMIT ${len(args)}", *args),
            post=lambda rows: [self._entity(r) for r in rows],
        )


class SyncOps(Repo):
    """Stored results of applied client operations, for exactly-once pushes."""

    __slots__ = ()

    def get_many(self, user_id: str, device_id: str, op_ids: Sequence[str]) -> Op[dict[str, Json]]:
        """The stored result of each already-applied op id (absent ids are missing)."""
        user, device = self._id("user_id", user_id), self._id("device_id", device_id)
        v.batch("op_ids", op_ids, self._limits)
        ids = list(dict.fromkeys(self._id(f"op_ids[{i}]", o) for i, o in enumerate(op_ids)))
        if not ids:
            return self._op(Const({}))
        if self._d.name == "postgresql":
            cmd = fetch(_PG_GET_OP_RESULTS, user, device, ids)
        else:
            cmd = fetch(_SQLITE_GET_OP_RESULTS, user, device, v.dump_json("op_ids", ids, 2**62))
        return self._op(cmd, post=lambda rows: {r["client_op_id"]: v.load_json(r["result"]) for r in rows})

    def get_for_user(self, user_id: str, op_ids: Sequence[str]) -> Op[dict[str, Json]]:
        """Like ``get_many`` but from any of the user's devices (op ids are unique per user)."""
        user = self._id("user_id", user_id)
        v.batch("op_ids", op_ids, self._limits)
        ids = list(dict.fromkeys(self._id(f"op_ids[{i}]", o) for i, o in enumerate(op_ids)))
        if not ids:
            return self._op(Const({}))
        if self._d.name == "postgresql":
            cmd = fetch(_PG_GET_USER_OP_RESULTS, user, ids)
        else:
            cmd = fetch(_SQLITE_GET_USER_OP_RESULTS, user, v.dump_json("op_ids", ids, 2**62))
        return self._op(cmd, post=lambda rows: {r["client_op_id"]: v.load_json(r["result"]) for r in rows})

    def record_many(self, user_id: str, device_id: str, results: Mapping[str, Json]) -> Op[int]:
        """Store op id → result; an id already stored keeps its first result. Returns the count given."""
        user, device = self._id("user_id", user_id), self._id("device_id", device_id)
        if not isinstance(results, Mapping):
            raise InvalidData("results", "expected a mapping of op id to result")
        now = self._d.ts(self._now())
        rows = [
            (user, device, self._id("op_id", op_id), self._result_json(f"results[{op_id!r}]", result), now)
            for op_id, result in results.items()
        ]
        v.batch("results", rows, self._limits)
        return self._op(
            many(_RECORD_OP_RESULT, rows) if rows else Const(None),
            post=lambda _: len(rows),
        )

    def purge(self, older_than_seconds: float, *, limit: int = 10_000) -> Op[int]:
        """Delete recorded operation results older than this (a device retrying later gets its op applied
        again, idempotently), at most ``limit`` of them; returns how many went."""
        return self._op(execute(_PURGE_OPS, self._older_than(older_than_seconds), self._limit(limit)))


class Changes(Repo):
    """The per-user change log that pulls read; ``seq`` is gap-free and strictly increasing."""

    __slots__ = ()

    def append_many(self, user_id: str, changes: Sequence[ChangeIn]) -> Op[list[int]]:
        """Append in order; returns the assigned sequence numbers.

        The per-user counter row is updated first, so concurrent appenders for one user
        serialize on it and sequence order is commit order: a reader never sees seq n+1
        committed while n is still in flight."""
        user = self._id("user_id", user_id)
        v.batch("changes", changes, self._limits)
        now = self._d.ts(self._now())
        body = []
        for i, c in enumerate(changes):
            if not isinstance(c, ChangeIn):
                raise InvalidData(f"changes[{i}]", "expected a ChangeIn")
            if c.op not in ("create", "update", "delete"):
                raise InvalidData(f"changes[{i}].op", "expected create, update or delete")
            if type(c.deleted) is not bool:
                raise InvalidData(f"changes[{i}].deleted", "expected a bool")
            body.append(
                (
                    self._name(f"changes[{i}].entity_type", c.entity_type),
                    self._id(f"changes[{i}].entity_id", c.entity_id),
                    c.op,
                    v.integer(f"changes[{i}].version", c.version),
                    self._json(f"changes[{i}].data", c.data),
                    c.deleted,
                    v.opt_text(f"changes[{i}].device_id", c.device_id, self._limits.max_id_chars),
                )
            )
        if not body:
            return self._op(Const([]))

        def steps() -> Steps[list[int]]:
            last = yield fetchval(_ADVANCE_SEQUENCE, user, len(body))
            first = last - len(body) + 1
            yield many(_APPEND_CHANGE, [(user, first + i, *row, now) for i, row in enumerate(body)])
            return list(range(first, last + 1))

        return self._op(steps)

    def lock_user(self, user_id: str) -> Op[int]:
        """Lock the user's change log until the transaction ends; returns the latest seq. Call it
        before touching the user's entities so that all writers of a user take locks in one order."""
        return self._op(fetchval(_LOCK_SEQUENCE, self._id("user_id", user_id)), post=lambda value: int(value))

    def read(self, user_id: str, *, after_seq: int = 0, limit: int = 500) -> Op[list[Change]]:
        """Changes with seq > ``after_seq``, in seq order."""
        ts = self._d.ts_out
        return self._op(
            fetch(
                _READ_CHANGES,
                self._id("user_id", user_id),
                v.integer("after_seq", after_seq),
                self._limit(limit),
            ),
            post=lambda rows: [
                Change(
                    r["seq"],
                    r["user_id"],
                    r["entity_type"],
                    r["entity_id"],
                    r["op"],
                    r["version"],
                    v.load_json(r["data"]),
                    bool(r["deleted"]),
                    r["device_id"],
                    ts(r["changed_at"]),
                )
                for r in rows
            ],
        )

    def latest_seq(self, user_id: str) -> Op[int]:
        """The highest seq appended for the user (0 if none)."""
        return self._op(fetchval(_LATEST_SEQ, self._id("user_id", user_id)), post=lambda value: value or 0)


class Devices(Repo):
    """Per-device sync state: the change-log cursor the device has acknowledged."""

    __slots__ = ()

    def _state(self, row: Row) -> DeviceState:
        return DeviceState(
            row["user_id"], row["device_id"], row["acked_seq"], self._d.ts_out(row["updated_at"])
        )

    def lock(self, user_id: str, device_id: str) -> Op[None]:
        """Serialize the rest of this transaction with every other one that locks the same (user,
        device), across processes: a transaction-scoped advisory lock on PostgreSQL; nothing on
        SQLite, whose single writer already serializes transactions."""
        user, device = self._id("user_id", user_id), self._id("device_id", device_id)
        if self._d.name != "postgresql":
            return self._op(Const(None))
        return self._op(fetchval(_PG_DEVICE_XACT_LOCK, user, device), post=lambda _: None)

    def try_lock(self, user_id: str, device_id: str) -> Op[bool]:
        """``lock`` without waiting: False when another transaction holds it (always True on SQLite)."""
        user, device = self._id("user_id", user_id), self._id("device_id", device_id)
        if self._d.name != "postgresql":
            return self._op(Const(True))
        return self._op(fetchval(_PG_DEVICE_XACT_TRY_LOCK, user, device), post=bool)

    def get(self, user_id: str, device_id: str) -> Op[DeviceState | None]:
        return self._op(
            fetchrow(_GET_DEVICE, self._id("user_id", user_id), self._id("device_id", device_id)),
            post=lambda row: None if row is None else self._state(row),
        )

    def acknowledge(self, user_id: str, device_id: str, seq: int) -> Op[DeviceState]:
        """Record that the device has everything up to ``seq``; the cursor never moves back."""
        now = self._d.ts(self._now())
        return self._op(
            fetchrow(
                _ACKNOWLEDGE,
                self._id("user_id", user_id),
                self._id("device_id", device_id),
                v.integer("seq", seq),
                now,
            ),
            post=self._state,
        )


class Conflicts(Repo):
    """Sync conflicts kept for a person to resolve (MANUAL policy)."""

    __slots__ = ()

    def _conflict(self, row: Row) -> Conflict:
        resolved = row["resolved_data"]
        return Conflict(
            row["id"],
            row["user_id"],
            row["device_id"],
            row["entity_type"],
            row["entity_id"],
            row["server_version"],
            row["base_version"],
            v.load_json(row["server_data"]),
            v.load_json(row["client_data"]),
            row["status"],
            row["resolution"],
            None if resolved is None else v.load_json(resolved),
            self._d.ts_out(row["created_at"]),
            self._d.opt_ts_out(row["resolved_at"]),
        )

    def open(
        self,
        user_id: str,
        *,
        entity_type: str,
        entity_id: str,
        server_version: int,
        server_data: Json,
        client_data: Json,
        base_version: int | None = None,
        device_id: str | None = None,
    ) -> Op[Conflict]:
        """Record an open conflict (a fresh id is generated)."""
        return self._op(
            fetchrow(
                _OPEN_CONFLICT,
                uuid.uuid4().hex,
                self._id("user_id", user_id),
                v.opt_text("device_id", device_id, self._limits.max_id_chars),
                self._name("entity_type", entity_type),
                self._id("entity_id", entity_id),
                v.integer("server_version", server_version),
                None if base_version is None else v.integer("base_version", base_version),
                self._json("server_data", server_data),
                self._json("client_data", client_data),
                self._d.ts(self._now()),
            ),
            post=self._conflict,
        )

    def get(self, user_id: str, conflict_id: str) -> Op[Conflict | None]:
        return self._op(
            fetchrow(_GET_CONFLICT, self._id("user_id", user_id), self._id("conflict_id", conflict_id)),
            post=lambda row: None if row is None else self._conflict(row),
        )

    def list(self, user_id: str, *, status: str | None = "open", limit: int = 100) -> Op[list[Conflict]]:
        """The user's conflicts (only ``status`` ones unless None), oldest first."""
        args: list[Any] = [self._id("user_id", user_id), self._limit(limit)]
        sql = _LIST_CONFLICTS
        if status is not None:
            if status not in ("open", "resolved"):
                raise InvalidData("status", "expected open, resolved or None")
            args.append(status)
            sql += " AND status = $3"
        return self._op(
            fetch(sql + " ORDER BY created_at, id LIMIT $2", *args),
            post=lambda rows: [self._conflict(r) for r in rows],
        )

    def resolve(self, user_id: str, conflict_id: str, *, resolution: str, data: Json = None) -> Op[Conflict]:
        """open → resolved with the chosen resolution and resulting data. NotFound if there is
        no such conflict for the user; ConflictError if it was already resolved."""
        args = (self._id("user_id", user_id), self._id("conflict_id", conflict_id))
        choice = self._name("resolution", resolution)
        body = None if data is None else self._json("data", data)
        now = self._d.ts(self._now())

        def steps() -> Steps[Conflict]:
            row = yield fetchrow(_RESOLVE_CONFLICT, *args, choice, body, now)
            if row is not None:
                return self._conflict(row)
            status = yield fetchval(_CONFLICT_STATUS, *args)
            if status is None:
                raise NotFound(f"no conflict {args[1]!r}")
            raise ConflictError(f"conflict {args[1]!r} is already {status}")

        return self._op(steps)
