"""Users (identified by the JWT ``sub``) and their settings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .. import _validate as v
from .._errors import InvalidData
from .._model import UserSettings
from .._sql import fetch, fetchrow, fetchval
from .._tx import Op
from .base import Repo, Row

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


def _settings(row: Row | None) -> UserSettings:
    if row is None:
        return UserSettings()
    return UserSettings(
        bool(row["allow_health_data_upload"]),
        tuple(v.load_json(row["blocked_metrics"])),
        row["timezone"],
        tuple(v.load_json(row["source_priority"])),
    )


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

        def post(rows: list[Row]) -> dict[str, UserSettings]:
            found = {r["user_id"]: _settings(r) for r in rows}
            return {u: found.get(u, UserSettings()) for u in users}

        return self._op(fetch(_GET_SETTINGS_MANY[self._d.name], arg), post=post)

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
