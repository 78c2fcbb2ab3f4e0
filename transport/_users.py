"""The user's own account (API.md "User settings"): who the token names, and their settings.

Handlers translate only: the body model in, ``AccountsService`` called, its answer rendered.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StrictBool, StrictStr, WithJsonSchema, field_validator

from actors.accounts import known_timezones
from actors.ingest import REGISTRY
from storage import UserSettings

from ._context import domains, refuse_while_draining
from ._routes import ApiBlueprint, ApiModel, current_request_id


def _known_metric(value: str) -> str:
    if value not in REGISTRY:
        raise ValueError(f"unknown metric {value!r}; known: {sorted(REGISTRY)}")
    return value


def _known_zone(value: str) -> str:
    if value not in known_timezones():
        raise ValueError(f"unknown IANA time zone {value!r}")
    return value


# The schema lists exactly the values the server takes: the metric registry, this server's tz database.
MetricName = Annotated[StrictStr, AfterValidator(_known_metric),
                       WithJsonSchema({"type": "string", "enum": sorted(REGISTRY)})]
ZoneName = Annotated[StrictStr, AfterValidator(_known_zone),
                     WithJsonSchema({"type": "string", "enum": sorted(known_timezones())})]


SourceId = Annotated[StrictStr, Field(min_length=1, max_length=256)]


class SettingsBody(ApiModel):
    allow_health_data_upload: StrictBool = True
    blocked_metrics: list[MetricName] = Field(default_factory=list, max_length=64)
    timezone: ZoneName = "UTC"
    # The user's sourceIds, most trusted first (overlapping data counts once, from the highest ranked).
    source_priority: list[SourceId] = Field(default_factory=list, max_length=64, json_schema_extra={"uniqueItems": True})

    @field_validator("source_priority")
    @classmethod
    def _distinct_sources(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("sourcePriority names a source more than once")
        return value


class Me(ApiModel):
    user_id: str


def _settings_out(settings: UserSettings) -> SettingsBody:
    return SettingsBody(allow_health_data_upload=settings.allow_health_data_upload,
                        blocked_metrics=list(settings.blocked_metrics), timezone=settings.timezone,
                        source_priority=list(settings.source_priority))


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
        blocked_metrics=tuple(sorted(set(body.blocked_metrics))),
        timezone=body.timezone,
        source_priority=tuple(body.source_priority),
    ), correlation_id=current_request_id())
    return _settings_out(stored)


__all__ = ["Me", "SettingsBody", "users"]
