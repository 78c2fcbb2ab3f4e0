"""User accounts: settings and sample reads, one keyed actor per user, behind ``AccountsService``.

Its errors (``AccountsError`` and below) are drawn in ``_errors``; storage's own pass through.
"""

from ._account import Account
from ._errors import AccountsError, InvalidCursor, InvalidSettings
from ._messages import GetSettings, PutSettings, QuerySamples
from ._service import (
    AccountsConfig,
    AccountsDomain,
    AccountsService,
    SamplePage,
    known_timezones,
    settings_problems,
)

__all__ = [
    "Account",
    "AccountsConfig",
    "AccountsDomain",
    "AccountsError",
    "AccountsService",
    "GetSettings",
    "InvalidCursor",
    "InvalidSettings",
    "PutSettings",
    "QuerySamples",
    "SamplePage",
    "known_timezones",
    "settings_problems",
]
