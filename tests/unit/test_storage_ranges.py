"""The projected watermark's pure rule (storage._ranges.absorb), property-tested."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from storage._ranges import absorb


@st.composite
def partition_and_completions(draw: st.DrawFn) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """A contiguous partition of (0, n] and an order of completing it, with some redeliveries."""
    cuts = draw(st.lists(st.integers(1, 500), min_size=1, max_size=25, unique=True))
    bounds = [0, *sorted(cuts)]
    pieces = list(zip(bounds, bounds[1:], strict=False))
    order = draw(st.permutations(pieces))
    repeats = draw(st.lists(st.sampled_from(pieces), max_size=5))
    positions = draw(st.lists(st.integers(0, len(order)), min_size=len(repeats), max_size=len(repeats)))
    completions = list(order)
    for piece, at in zip(repeats, positions, strict=True):
        completions.insert(at, piece)  # a redelivered piece, completed again somewhere along the way
    return pieces, completions


@settings(max_examples=300, derandomize=True)
@given(partition_and_completions())
def test_the_mark_is_exactly_the_completed_prefix(case: tuple[list[tuple[int, int]],
                                                               list[tuple[int, int]]]) -> None:
    pieces, completions = case
    mark, waiting = 0, []
    done: set[tuple[int, int]] = set()
    for piece in completions:
        done.add(piece)
        # What Watermarks.advance stores: only ranges reaching above the mark.
        fresh = [piece] if piece[1] > mark else []
        mark, waiting = absorb(mark, list(dict.fromkeys([*waiting, *fresh])))
        prefix = 0
        for start, end in pieces:
            if (start, end) not in done:
                break
            prefix = end
        assert mark == prefix  # never claims a range not completed, never lags one that is
        assert waiting == sorted(p for p in done if p[0] >= prefix and p[1] > prefix)
        assert (mark == pieces[-1][1]) == (done == set(pieces))
    assert mark == pieces[-1][1] and waiting == []


def test_absorb_examples() -> None:
    assert absorb(0, []) == (0, [])
    assert absorb(0, [(5, 9), (0, 2), (2, 5)]) == (9, [])
    assert absorb(0, [(3, 4), (1, 2)]) == (0, [(1, 2), (3, 4)])
    assert absorb(10, [(0, 4), (8, 12), (12, 13), (20, 21)]) == (13, [(20, 21)])  # overlap and gaps
