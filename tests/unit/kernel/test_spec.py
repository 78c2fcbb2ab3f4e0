"""ChildSpec and Supervisor: the documented defaults, and invalid specs refused up front."""

from __future__ import annotations

from typing import Any

import pytest

from kernel import ActorSystem, ChildSpec, Supervisor

from ._helpers import Worker


def test_documented_defaults() -> None:
    spec = ChildSpec("w", Worker)
    assert (spec.args, spec.kwargs, spec.restart, spec.mailbox, spec.overflow) == ((), {}, "permanent", 1024, "block")
    assert (spec.shutdown_timeout, spec.keyed, spec.idle_timeout, spec.max_live) == (5.0, False, 300.0, 10_000)
    sup = Supervisor("root", children=[spec])
    assert (sup.strategy, sup.max_restarts, sup.within) == ("one_for_one", 3, 5.0)
    assert (sup.base_delay, sup.max_delay, sup.reset_after) == (0.0, 30.0, 60.0)


@pytest.mark.parametrize("kwargs", [
    {"name": "a/b"}, {"name": ""}, {"restart": "sometimes"}, {"overflow": "spill"},
    {"mailbox": 0}, {"max_live": 0}, {"shutdown_timeout": -1.0}, {"idle_timeout": float("nan")},
])
def test_invalid_child_specs_are_refused(kwargs: dict[str, Any]) -> None:
    params: dict[str, Any] = {"name": "w", "factory": Worker}
    params.update(kwargs)
    name, factory = params.pop("name"), params.pop("factory")
    with pytest.raises(ValueError):
        ChildSpec(name, factory, **params)


def test_a_factory_must_be_callable() -> None:
    with pytest.raises(TypeError):
        ChildSpec("w", "not callable")  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [
    {"strategy": "one_for_some"}, {"max_restarts": -1}, {"within": -1.0}, {"within": float("inf")},
    {"base_delay": -0.1}, {"max_delay": -1.0}, {"reset_after": -1.0},
])
def test_invalid_supervisors_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Supervisor("root", children=[], **kwargs)


def test_children_names_must_be_unique_and_children_must_be_specs() -> None:
    with pytest.raises(ValueError, match="two children"):
        Supervisor("root", children=[ChildSpec("w", Worker), ChildSpec("w", Worker)])
    with pytest.raises(TypeError):
        Supervisor("root", children=[Worker])  # type: ignore[list-item]


def test_the_root_of_a_system_must_be_a_supervisor() -> None:
    with pytest.raises(TypeError):
        ActorSystem(ChildSpec("w", Worker))  # type: ignore[arg-type]
