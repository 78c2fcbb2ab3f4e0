"""An upload, from its raw bytes to the lane's message: parse, validate, hash-check, prepare.

API.md "Health samples: ingestion" defines the document; :class:`UploadBody` is it, and the HTTP
layer publishes this same model in its OpenAPI document, so what is documented is what is checked.

The body is parsed once (orjson) for both validation and ``payloadHash``; what orjson refuses
(malformed JSON, NaN, lone surrogates, ...) takes the stdlib path, which decides as the contract
says. :func:`decoding_upload` yields between its steps (each under a millisecond for 500 samples),
so the server can interleave other work; :func:`decode_upload` runs it in one go, as a decode worker
process does. Errors are the domain's (:mod:`._errors`) or the store's ``InvalidData``.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator, Sequence
from dataclasses import replace
from typing import Annotated, Any, Literal, overload

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StrictFloat,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from ._errors import InvalidUpload, PayloadHashMismatch, Problem, TooManyItems
from ._messages import LANES, IngestBatch, Lane
from ._payload import parse_body, payload_hash_parsed, payload_hash_raw
from ._samples import DeletionInput, PreparesSamples, preparing_upload, run_steps

# API.md: at most 5,000 samples + deletions per request.
MAX_ITEMS = 5_000
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


# RFC 3339's date-time (section 5.6): seconds and an offset required, "T"/"Z" in either case.
RFC3339_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$"


class _RFC3339Text:
    """pydantic alone also takes epoch numbers, numeric strings, a space for "T" and missing seconds;
    API.md (and the published ``format: date-time``) say RFC 3339, so the value must first be text of
    that shape. Both checks run in pydantic-core: no Python call per value (5,000 per upload)."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        text = core_schema.custom_error_schema(
            core_schema.str_schema(pattern=RFC3339_PATTERN, strict=True), custom_error_type="rfc3339_date_time",
            custom_error_message="expected an RFC 3339 date-time with seconds and a timezone offset, "
                                 "e.g. 2026-11-24T08:00:00Z")
        return core_schema.chain_schema([text, handler(source)])

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"type": "string", "format": "date-time"}


RFC3339DateTime = Annotated[AwareDatetime, _RFC3339Text]
"""A timezone-aware datetime given as RFC 3339 text (``format: date-time`` in the schema), nothing looser."""


class UploadModel(BaseModel):
    """snake_case in Python, camelCase in the document; values of exactly the documented types."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class SampleBody(UploadModel):
    source_id: StrictStr = Field(min_length=1, max_length=256)
    source_record_id: StrictStr = Field(min_length=1, max_length=256)
    metric: StrictStr = Field(min_length=1, max_length=64)
    value: StrictFloat | None  # null / non-finite: rejected per sample, not per request
    unit: StrictStr = Field(min_length=1, max_length=32)
    start_at: RFC3339DateTime
    end_at: RFC3339DateTime
    metadata: dict[str, Any] = Field(default_factory=dict)


class DeletionBody(UploadModel):
    source_id: StrictStr = Field(min_length=1, max_length=256)
    source_record_id: StrictStr = Field(min_length=1, max_length=256)
    start_at: RFC3339DateTime


class UploadBody(UploadModel):
    """``POST /v1/health/samples/batch-upsert``'s body."""

    # The schema says what the validator below checks: deletions only on the change lane.
    model_config = ConfigDict(json_schema_extra={
        "if": {"properties": {"lane": {"not": {"const": "change"}}}, "required": ["lane"]},
        "then": {"properties": {"deletions": {"maxItems": 0}}},
    })

    request_id: StrictStr = Field(pattern=REQUEST_ID_PATTERN)
    payload_hash: StrictStr = Field(pattern=r"^[0-9a-f]{64}$",
                                     description="SHA-256 (lowercase hex) of the body's RFC 8785 form without "
                                                 "payloadHash")
    lane: Literal["hot", "cold", "change"]
    # Not maxItems: past MAX_ITEMS samples + deletions together the answer is 413, as API.md says.
    samples: list[SampleBody] = Field(default_factory=list,
                                      description=f"at most {MAX_ITEMS} samples and deletions together (413 beyond)")
    deletions: list[DeletionBody] = Field(default_factory=list,
                                          description="on the change lane only; counted with samples")

    @model_validator(mode="after")
    def _deletions_on_change_lane(self) -> UploadBody:
        if self.deletions and self.lane != "change":
            raise ValueError("deletions are accepted on the change lane only")
        return self


_LANE_MEMBER = re.compile(rb'"lane"\s*:\s*"(hot|cold|change)"')
_LANE_NAMES: dict[bytes, Lane] = {lane.encode(): lane for lane in LANES}


def named_lane(raw: bytes) -> Lane | None:
    """The lane a raw body names, before parsing; None when absent or ambiguous (a "lane" key in
    metadata too): validation then decides, and the upload is treated as background."""
    found = _LANE_MEMBER.findall(raw)
    return _LANE_NAMES[found[0]] if len(found) == 1 else None


def _problems(exc: ValidationError) -> tuple[Problem, ...]:
    """Each field path and problem; never the offending input (it may be a health sample)."""
    return tuple(Problem(path=".".join(str(p) for p in err["loc"]), problem=err["msg"], kind=err["type"])
                 for err in exc.errors(include_url=False, include_input=False, include_context=False))


def _invalid(exc: ValidationError) -> InvalidUpload:
    problems = _problems(exc)
    broken = tuple(p for p in problems if p.kind == "json_invalid")
    if broken:
        return InvalidUpload("request body is not valid JSON", tuple(replace(p, path="") for p in broken))
    return InvalidUpload("the request body is invalid", problems)


def validate_upload(raw: bytes, document: dict[str, Any] | None = None) -> UploadBody:
    """``raw`` (or ``document``, already parsed from it) as an :class:`UploadBody`. A refusal is
    reported from ``raw``, so its messages are the JSON-mode ones whichever way it was validated."""
    if document is not None:
        try:
            return UploadBody.model_validate(document)
        except ValidationError:
            pass
    try:
        return UploadBody.model_validate_json(raw)
    except ValidationError as exc:
        raise _invalid(exc) from None


def decoding_upload(user_id: str, raw: bytes, preparer: PreparesSamples) -> Generator[None, None, IngestBatch]:
    """Validate the body, check its payloadHash, judge and store-check its samples: the lane's
    message, ready to commit. Yields between its steps, so an async driver can let other tasks run."""
    document = parse_body(raw)
    yield
    body = validate_upload(raw, document)
    yield
    count = len(body.samples) + len(body.deletions)
    if count > MAX_ITEMS:
        raise TooManyItems(count, MAX_ITEMS)
    try:
        expected = payload_hash_raw(raw) if document is None else payload_hash_parsed(document, raw)
    except ValueError as exc:
        raise InvalidUpload(str(exc), (Problem(path="", problem=str(exc), kind="jcs_unencodable"),)) from None
    if expected != body.payload_hash:
        raise PayloadHashMismatch(
            "payloadHash does not match the body (SHA-256 of its RFC 8785 form without payloadHash)")
    yield
    prepared = yield from preparing_upload(body.samples, preparer)
    return IngestBatch(
        user_id=user_id,
        request_id=body.request_id,
        payload_hash=body.payload_hash,
        lane=body.lane,
        # The validated models satisfy the lane's SampleLike/DeletionLike as they are: no copy per sample.
        samples=tuple(body.samples),
        deletions=tuple(body.deletions),
        prepared=prepared,
    )


def decode_upload(user_id: str, raw: bytes, preparer: PreparesSamples) -> IngestBatch:
    """:func:`decoding_upload` in one go, as a decode worker runs it. What it returns crosses back
    pickled, so it carries the prepared rows and plain deletions but not the sample models (the
    server attaches :class:`UploadSamples` instead)."""
    batch = run_steps(decoding_upload(user_id, raw, preparer))
    deletions = tuple(DeletionInput(source_id=d.source_id, source_record_id=d.source_record_id, start_at=d.start_at)
                      for d in batch.deletions)
    return replace(batch, samples=(), deletions=deletions)


class UploadSamples(Sequence[SampleBody]):
    """The samples of an upload already validated (in a worker), parsed again here only if asked
    for: the lane needs them only to prepare an upload again for a user's blocked metrics."""

    __slots__ = ("_raw", "_samples")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._samples: tuple[SampleBody, ...] | None = None

    def _loaded(self) -> tuple[SampleBody, ...]:
        if self._samples is None:
            self._samples = tuple(validate_upload(self._raw).samples)
        return self._samples

    def __len__(self) -> int:
        return len(self._loaded())

    @overload
    def __getitem__(self, index: int) -> SampleBody: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[SampleBody]: ...
    def __getitem__(self, index: int | slice) -> SampleBody | Sequence[SampleBody]:
        return self._loaded()[index]

    def __iter__(self) -> Iterator[SampleBody]:
        return iter(self._loaded())


__all__ = [
    "MAX_ITEMS",
    "REQUEST_ID_PATTERN",
    "RFC3339DateTime",
    "DeletionBody",
    "SampleBody",
    "UploadBody",
    "UploadSamples",
    "decode_upload",
    "decoding_upload",
    "named_lane",
    "validate_upload",
]
