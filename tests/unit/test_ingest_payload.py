"""payloadHash: SHA-256 (lowercase hex) of the RFC 8785 (JCS) canonical form of the body without its
``payloadHash`` member. The expected canonical strings below are written out by hand from RFC 8785,
not produced by the library under test."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.ingest import parse_body, payload_hash, payload_hash_parsed, payload_hash_raw


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_rfc8785_section_3_2_2_vector() -> None:
    """The RFC's own example (§3.2.2): number formatting, string escapes, key order."""
    source = (r'{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
              r' "string": "\u20ac$\u000F\u000aA' "'" r'\u0042\u0022\u005c\\\"\/",'
              r' "literals": [null, true, false]}')
    body = json.loads(source)
    body["payloadHash"] = "0" * 64  # never part of what is hashed
    canonical = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
                 '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}')
    assert payload_hash(body) == sha(canonical)


def test_rfc8785_section_3_2_3_key_order_is_by_utf16_code_units() -> None:
    """U+1F600 (surrogates D83D DE00) sorts before U+FB33 in UTF-16, after it by code point:
    a plain ``json.dumps(sort_keys=True)`` gets this wrong."""
    body = {"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
            "1": "One", "\U0001f600": "Emoji: Grinning Face", "\u0080": "Control",
            "\u00f6": "Latin Small Letter O With Diaeresis"}
    canonical = ('{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
                 '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
                 '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}')
    assert payload_hash(body) == sha(canonical)
    assert payload_hash(body) != sha(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def test_a_batch_body_vector() -> None:
    """1.0 → 1, -0.0 → 0, 1e21 → 1e+21, 1e-7 → 1e-7, 1e-6 → 0.000001, 1e20 → 100000000000000000000,
    non-ASCII kept as UTF-8, nested keys sorted, payloadHash left out wherever the key order put it."""
    body = {
        "samples": [{"value": 1.0, "unit": "bpm", "startAt": "2026-11-24T08:00:00Z",
                     "metadata": {"z": 1e21, "a": 1e-7, "\u20ac": "\u00e9", "\r": 0.000001, "1": -0.0,
                                  "big": 1e20, "n": None, "t": True, "list": [1.5, 2.0, "x"]}}],
        "payloadHash": "f" * 64,
        "requestId": "r-1",
        "lane": "hot",
    }
    canonical = ('{"lane":"hot","requestId":"r-1","samples":[{"metadata":{"\\r":0.000001,"1":0,"a":1e-7,'
                 '"big":100000000000000000000,"list":[1.5,2,"x"],"n":null,"t":true,"z":1e+21,"\u20ac":"\u00e9"},'
                 '"startAt":"2026-11-24T08:00:00Z","unit":"bpm","value":1}]}')
    assert payload_hash(body) == sha(canonical)


def test_hash_is_lowercase_hex_sha256() -> None:
    digest = payload_hash({"requestId": "x"})
    assert digest == sha('{"requestId":"x"}')
    assert len(digest) == 64 and digest == digest.lower() and int(digest, 16) >= 0


def test_payload_hash_member_is_excluded_only_at_the_top_level() -> None:
    inner = {"requestId": "x", "samples": [{"metadata": {"payloadHash": "kept"}}]}
    assert payload_hash({**inner, "payloadHash": "a"}) == payload_hash(inner)
    assert payload_hash(inner) == sha('{"requestId":"x","samples":[{"metadata":{"payloadHash":"kept"}}]}')


def test_non_finite_numbers_hash_as_null_like_json_stringify() -> None:
    assert payload_hash({"v": float("nan")}) == sha('{"v":null}')
    assert payload_hash({"v": [float("inf"), -float("inf")]}) == sha('{"v":[null,null]}')


def test_a_body_jcs_cannot_encode_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        payload_hash({"s": "\ud800"})  # an unpaired surrogate is not Unicode text


@pytest.mark.parametrize("big, as_javascript", [
    (2**64, float(2**64)),
    (-11628193146695299072, -1.1628193146695299e19),
    (2**53, float(2**53)),
    (10**400, None),  # past double range: JSON.parse gives Infinity, JSON.stringify null
])
def test_integers_past_doubles_hash_as_the_double_javascript_reads(big: int, as_javascript: float | None) -> None:
    assert payload_hash({"v": big, "w": [big]}) == payload_hash({"v": as_javascript, "w": [as_javascript]})
    raw = json.dumps({"v": big}).encode()
    assert payload_hash_raw(raw) == payload_hash({"v": as_javascript})


# -- properties --------------------------------------------------------------------------------------
json_scalars = st.none() | st.booleans() | st.text(max_size=8) | st.integers(-(2**53) + 1, 2**53 - 1) \
    | st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=6), children, max_size=4), max_leaves=20)
bodies = st.dictionaries(st.text(max_size=8).filter(lambda k: k != "payloadHash"), json_values, max_size=6)


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@settings(max_examples=150, deadline=None)
@given(body=bodies, seed=st.integers(0, 2**32), hash_value=st.text(max_size=70))
def test_hash_ignores_key_order_formatting_and_the_hash_member(body: dict[str, Any], seed: int,
                                                              hash_value: str) -> None:
    reordered = _shuffled(body, random.Random(seed))
    reparsed = json.loads(json.dumps(reordered, indent=3))  # another formatting of the same JSON
    assert payload_hash({**reparsed, "payloadHash": hash_value}) == payload_hash(body)


@settings(max_examples=150, deadline=None)
@given(body=bodies, key=st.text(min_size=1, max_size=8).filter(lambda k: k != "payloadHash"), value=json_values)
def test_any_change_to_the_body_changes_the_hash(body: dict[str, Any], key: str, value: Any) -> None:
    changed = dict(body)
    changed[key] = value
    if changed == body:
        return  # not a change after all (Python equality also makes 1 == 1.0 and 0.0 == -0.0, as JSON does)
    assert payload_hash(changed) != payload_hash(body)


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**60), 2**60)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(body=st.dictionaries(st.text(max_size=6), _JSON, max_size=5), ascii_only=st.booleans())
def test_the_one_pass_hash_of_raw_bytes_equals_the_rfc8785_reference(body: dict[str, Any], ascii_only: bool) -> None:
    raw = json.dumps(body, ensure_ascii=ascii_only).encode()
    assert _outcome(payload_hash_raw, raw) == _outcome(lambda r: payload_hash(json.loads(r)), raw)


def _outcome(fn: Any, raw: bytes) -> str:
    """The hash, or the refusal: both paths must refuse the same bodies (e.g. integers past 2**53)."""
    try:
        return str(fn(raw))
    except ValueError:
        return "refused"


@pytest.mark.parametrize("raw", [
    b'{"v": 1e-7, "w": 1e21, "y": NaN, "z": "\\ud83d\\ude00\\ue000"}',
    b'{"x": 123456789012345678901}',
    b'{"\\ue000": 1, "\\ud83d\\ude00": 2}',  # UTF-16 key order differs from code-point order here
    b'{"a": -0.0, "b": 1.0, "c": 0.0001, "d": 4503599627370497.0}',
])
def test_the_one_pass_hash_takes_the_reference_path_where_encodings_differ(raw: bytes) -> None:
    assert _outcome(payload_hash_raw, raw) == _outcome(lambda r: payload_hash(json.loads(r)), raw)


_NUMBERS = (st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**70), 2**70)
            | st.integers(-(10**6), 10**6).map(float) | st.sampled_from([0.0, -0.0, 1e-7, 1e-6, 1e-4, 1e15, 1e16, 1e21]))
# Text that looks like number tokens to the output scan ("x":1.0, [1e5 ...) without being numbers.
_LOOKALIKE = st.text(alphabet=':,[]{}0123456789.eE-+"\\ ', max_size=12)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(body=st.dictionaries(st.text(max_size=4), st.lists(_NUMBERS | _LOOKALIKE, max_size=6) | _NUMBERS | _LOOKALIKE,
                            max_size=5),
       as_written=st.booleans())
def test_numbers_and_number_lookalikes_hash_as_the_reference_does(body: dict[str, Any], as_written: bool) -> None:
    """Every float and integer (integral floats, exponents, past 2**53) and strings made of the
    characters the output scan looks for: the fast path, the walk and the slow path all agree with
    the reference."""
    raw = json.dumps(body, ensure_ascii=as_written).encode()
    assert _outcome(payload_hash_raw, raw) == _outcome(lambda r: payload_hash(json.loads(r)), raw)


def test_hashing_a_parsed_body_leaves_it_as_it_was() -> None:
    raw = b'{"payloadHash": "x", "samples": [{"value": 72.0, "metadata": {"n": 1.0}}], "lane": "hot"}'
    document = parse_body(raw)
    assert document is not None
    before = json.dumps(document)
    assert payload_hash_parsed(document, raw) == payload_hash(json.loads(raw))
    assert json.dumps(document) == before and document["payloadHash"] == "x"


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"{not json", b'{"v": NaN}', b'{"s": "\\ud800"}', b"{\"v\": 1e400}"])
def test_what_orjson_refuses_is_left_to_the_stdlib_path(raw: bytes) -> None:
    assert parse_body(raw) is None
