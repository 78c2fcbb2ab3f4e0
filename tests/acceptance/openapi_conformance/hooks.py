"""schemathesis hooks (``SCHEMATHESIS_HOOKS``): what a generator cannot know but a client computes.

A batch upsert's ``payloadHash`` is SHA-256 over the body's RFC 8785 form: the schema can say its
shape (64 lowercase hex digits) but not its value, so a generated body whose hash has the right
shape gets the right value, as a real client's would. And a client names each new upload with a
new ``requestId`` (reusing one for another body is answered 422 by contract, which no schema can
say), so a well-formed generated one is replaced by the next of a sequence. Values the generator
broke on purpose (wrong shape, wrong type, missing) are left alone: those are negative cases.
A sync pull's ``cursor`` is opaque: a client only sends one the server gave it, so a well-formed generated one
is dropped (a pull from the start).
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import schemathesis

from actors.ingest import payload_hash

UPLOAD_PATH = "/v1/health/samples/batch-upsert"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_request_ids = itertools.count(1)
PULL_PATH = "/v1/sync/pull"
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,128}")


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Every phase's cases pass here just before they are sent (map_body misses the coverage phase)."""
    if case.operation.path == PULL_PATH and isinstance(case.query, dict):
        cursor = case.query.get("cursor")
        if isinstance(cursor, str) and _CURSOR.fullmatch(cursor):
            del case.query["cursor"]
    body = case.body
    if case.operation.path != UPLOAD_PATH or not isinstance(body, dict):
        return
    request_id = body.get("requestId")
    if isinstance(request_id, str) and _REQUEST_ID.fullmatch(request_id):
        body["requestId"] = f"st-{next(_request_ids)}"
    claimed = body.get("payloadHash")
    if not (isinstance(claimed, str) and _HEX64.fullmatch(claimed)):
        return
    try:
        body["payloadHash"] = payload_hash(body)
    except ValueError:
        pass  # no canonical form: the server answers that itself
