"""Value types of the wire that pydantic alone would read too loosely."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"


class _DateText:
    """API.md: dates are ``YYYY-MM-DD``. pydantic also takes datetimes at midnight and epoch numbers."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        text = core_schema.custom_error_schema(
            core_schema.str_schema(pattern=DATE_PATTERN, strict=True), custom_error_type="iso_date",
            custom_error_message="expected a date as YYYY-MM-DD")
        return core_schema.chain_schema([text, handler(source)])

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"type": "string", "format": "date"}


ISODate = Annotated[date, _DateText]
"""A calendar date given as ``YYYY-MM-DD`` text (``format: date``), nothing looser."""

__all__ = ["DATE_PATTERN", "ISODate"]
