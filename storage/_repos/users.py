"""Users (identified by the JWT ``sub``) and their settings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .. import _validate as v
from .._errors import InvalidData
from .._model import UserSettings
from .._sql import Steps, fetch, fetchrow, fetchval
from .._tx import Op
from .base import Repo, Row
from .samples import _SOURCES_MANY, sources_by_user

__all__ = ["Users"]

_ENSURE = (
    "INSERT INTO users (user_id, allow_health_data_upload, blocked_metrics, timezone,"
    " created_at, updated_at) VALUES ($1, true, '[]', 'UTC', $2, $2)"
    " ON CONFLICT (user_id) DO NOTHING RETURNING 1"
)
_SETTINGS_COLS = "allow_health_data_upload, blocked_metrics, timezone, source_priority"
_GET_SETTINGS = f"SELECT {_SETTINGS_COLS} FROM users WHERE user_id = $1"
_GET_SETTINGS_MANY = {
    "postgresql": f"SELECT user_id, {_SETTINGS_COLS} FROM users WHERE user_id = ANY($1::text[])",
    "sqlite": f"SELECT user_id, {_SETTINGS_COLS} FROM users WHERE user_id IN (SELECT value FROM json_each($1))",
}
_PUT_SETTINGS = (
    "INSERT INTO users (user_id, allow_health_data_upload, blocked_metrics, timezone, source_priority,"
    " created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)"
    " ON CONFLICT (user_id) DO UPDATE SET"
    " allow_health_data_upload = excluded.allow_health_data_upload,"
    " blocked_metrics = excluded.blocked_metrics, timezone = excluded.timezone,"
    " source_priority = excluded.source_priority, updated_at = excluded.updated_at"
    f" RETURNING {_SETTINGS_COLS}"
)
# A ranking longer than this names more sources than any user has; it is refused, not truncated.
MAX_SOURCE_PRIORITY = 64


# projection_contexts_many on PostgreSQL: settings and sources (first-seen order, as samples.sources) in one
# statement; SQLite runs the two statements.
_CONTEXTS_PG = (
    f"SELECT k.user_id, {', '.join('u.' + c for c in _SETTINGS_COLS.split(', '))}, u.user_id IS NOT NULL AS saved,"
    " s.sources FROM unnest($1::text[]) AS k(user_id) LEFT JOIN users AS u ON u.user_id = k.user_id"
    " LEFT JOIN LATERAL (SELECT array_agg(x.source_id ORDER BY x.first_at, x.first_id, x.source_id) AS sources"
    " FROM (SELECT source_id, min(created_at) AS first_at, min(id) AS first_id FROM health_samples AS h"
    " WHERE h.user_id = k.user_id GROUP BY source_id) AS x) AS s ON true"
)


def _settings(row: Row | None) -> UserSettings:
    if row is None:
        return UserSettings()
    return UserSettings(
        bool(row["allow_health_data_upload"]),
        tuple(v.load_json(row["blocked_metrics"])),
        row["timezone"],
        tuple(v.load_json(row["source_priority"])),
    )


def _settings_by_user(rows: Sequence[Row], users: Sequence[str]) -> dict[str, UserSettings]:
    """Each user's settings from its row, the defaults for one who never saved any."""
    found = {r["user_id"]: _settings(r) for r in rows}
    return {u: found.get(u, UserSettings()) for u in users}


class Users(Repo):
    """Users (identified by the JWT ``sub``) and their settings."""

    __slots__ = ()

    def ensure(self, user_id: str) -> Op[bool]:
        """Create the user with default settings if absent; True if created."""
        now = self._d.ts(self._now())
        return self._op(
            fetchval(_ENSURE, self._id("user_id", user_id), now),
            post=lambda value: value is not None,
        )

    def get_settings(self, user_id: str) -> Op[UserSettings]:
        """The user's settings, or the defaults for a user who never saved any."""
        return self._op(fetchrow(_GET_SETTINGS, self._id("user_id", user_id)), post=_settings)

    def get_settings_many(self, user_ids: Sequence[str]) -> Op[dict[str, UserSettings]]:
        """Each user's settings (defaults for one who never saved any), in one statement."""
        users = sorted({self._id(f"user_ids[{i}]", u) for i, u in enumerate(user_ids)})
        arg: Any = users if self._d.name == "postgresql" else json.dumps(users)

        return self._op(fetch(_GET_SETTINGS_MANY[self._d.name], arg), post=lambda rows: _settings_by_user(rows, users))

    def projection_contexts_many(self, user_ids: Sequence[str]) -> Op[dict[str, tuple[UserSettings, list[str]]]]:
        """Each user's settings and source ids in first-seen order (``get_settings_many`` and
        ``samples.sources_many`` together: one statement on PostgreSQL, for a projection's unit of work)."""
        users = sorted({self._id(f"user_ids[{i}]", u) for i, u in enumerate(user_ids)})
        if self._d.name != "postgresql":
            arg = json.dumps(users)

            def steps() -> Steps[dict[str, tuple[UserSettings, list[str]]]]:
                saved = _settings_by_user((yield fetch(_GET_SETTINGS_MANY["sqlite"], arg)), users)
                seen = sources_by_user((yield fetch(_SOURCES_MANY["sqlite"], arg)), users)
                return {u: (saved[u], seen[u]) for u in users}

            return self._op(steps)

        def post(rows: list[Row]) -> dict[str, tuple[UserSettings, list[str]]]:
            return {r["user_id"]: (_settings(r) if r["saved"] else UserSettings(), list(r["sources"] or []))
                    for r in rows}

        return self._op(fetch(_CONTEXTS_PG, users), post=post)

    def put_settings(self, user_id: str, settings: UserSettings) -> Op[UserSettings]:
        """Replace the user's settings (creating the user if needed); returns what was stored."""
        if not isinstance(settings, UserSettings):
            raise InvalidData("settings", "expected UserSettings")
        if type(settings.allow_health_data_upload) is not bool:
            raise InvalidData("settings.allow_health_data_upload", "expected a bool")
        if not isinstance(settings.blocked_metrics, tuple | list):
            raise InvalidData("settings.blocked_metrics", "expected a sequence of metric names")
        metrics = tuple(
            dict.fromkeys(
                self._name(f"settings.blocked_metrics[{i}]", m)
                for i, m in enumerate(settings.blocked_metrics)
            )
        )
        zone = v.timezone("settings.timezone", settings.timezone)
        priority = self._source_priority(settings.source_priority)
        now = self._d.ts(self._now())
        return self._op(
            fetchrow(
                _PUT_SETTINGS,
                self._id("user_id", user_id),
                settings.allow_health_data_upload,
                self._json("settings.blocked_metrics", list(metrics)),
                zone,
                self._json("settings.source_priority", list(priority)),
                now,
            ),
            post=_settings,
        )

    def _source_priority(self, value: object) -> tuple[str, ...]:
        # A repeat is refused rather than collapsed: a ranking naming a source twice is ambiguous.
        if not isinstance(value, tuple | list):
            raise InvalidData("settings.source_priority", "expected a sequence of source ids")
        if len(value) > MAX_SOURCE_PRIORITY:
            raise InvalidData("settings.source_priority", f"more than {MAX_SOURCE_PRIORITY} sources")
        ids = tuple(self._id(f"settings.source_priority[{i}]", s) for i, s in enumerate(value))
        if len(set(ids)) != len(ids):
            raise InvalidData("settings.source_priority", "names a source more than once")
        return ids
