"""The user's own account (API.md "User settings"): who the token names, and their settings.

Handlers translate only: the body model in, ``AccountsService`` called, its answer rendered.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from actors.accounts import known_timezones
from actors.ingest import REGISTRY
from storage import UserSettings

from ._routes import ApiBlueprint, ApiModel
from ._services import domains, refuse_while_draining


class SettingsBody(ApiModel):
    allow_health_data_upload: bool = True
    blocked_metrics: list[str] = Field(default_factory=list, max_length=64)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value not in known_timezones():
            raise ValueError(f"unknown IANA time zone {value!r}")
        return value

    @field_validator("blocked_metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(REGISTRY))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; known: {sorted(REGISTRY)}")
        return sorted(set(value))


class Me(ApiModel):
    user_id: str


def _settings_out(settings: UserSettings) -> SettingsBody:
    return SettingsBody(allow_health_data_upload=settings.allow_health_data_upload,
                        blocked_metrics=list(settings.blocked_metrics), timezone=settings.timezone)


users = ApiBlueprint("users", url_prefix="/v1/users", tags=["settings"])


@users.get("/me", response=Me, summary="Who the bearer token says you are")
async def whoami(*, user_id: str) -> Me:
    return Me(user_id=user_id)


@users.get("/me/settings", response=SettingsBody, summary="The user's privacy and locale settings",
           errors=[503])
async def get_settings(*, user_id: str) -> SettingsBody:
    return _settings_out(await domains().accounts.get_settings(user_id))


@users.put("/me/settings", body=SettingsBody, response=SettingsBody, summary="Replace the user's settings",
           errors=[503])
async def put_settings(*, user_id: str, body: SettingsBody) -> SettingsBody:
    refuse_while_draining()
    stored = await domains().accounts.put_settings(user_id, UserSettings(
        allow_health_data_upload=body.allow_health_data_upload,
        blocked_metrics=tuple(body.blocked_metrics),
        timezone=body.timezone,
    ))
    return _settings_out(stored)


__all__ = ["Me", "SettingsBody", "users"]
