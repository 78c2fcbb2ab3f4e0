"""The accounts domain's errors.

    AccountsError
     ├── InvalidCursor      a sample cursor this API did not issue
     └── InvalidSettings    settings naming an unknown time zone or metric; ``problems`` lists them

Storage's own errors (an unavailable database) pass through; transport maps both to HTTP.
"""

from __future__ import annotations


class AccountsError(Exception):
    """Base of the accounts domain's errors."""


class InvalidCursor(AccountsError):
    def __init__(self) -> None:
        super().__init__("cursor is not one this API issued")


class InvalidSettings(AccountsError):
    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(f"{field}: {problem}" for field, problem in problems.items()))
        self.problems = problems  # field name -> what is wrong with it


__all__ = ["AccountsError", "InvalidCursor", "InvalidSettings"]
