"""The metric registry: each metric's canonical unit and the alternative units converted to it.

Conversions are affine (``canonical = value * scale + offset``) so temperatures fit the same table.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class Metric:
    name: str
    unit: str
    # alternative unit -> (scale, offset); the canonical unit itself is implied
    alternatives: dict[str, tuple[float, float]] = field(default_factory=dict)
    minimum: float | None = None
    maximum: float | None = None
    integral: bool = False


# HealthKit's sleep analysis categories, used as sleep_stage values.
SLEEP_STAGES: dict[int, str] = {0: "in_bed", 1: "asleep", 2: "awake", 3: "core", 4: "deep", 5: "rem"}

_KCAL_PER_KJ = 1 / 4.184
_METRICS = (
    Metric(name="heart_rate", unit="bpm", alternatives={"count/min": (1.0, 0.0), "beats/min": (1.0, 0.0)},
           minimum=0.0, maximum=400.0),
    Metric(name="resting_heart_rate", unit="bpm", alternatives={"count/min": (1.0, 0.0)}, minimum=0.0, maximum=400.0),
    Metric(name="steps", unit="count", alternatives={"steps": (1.0, 0.0)}, minimum=0.0),
    Metric(name="active_energy", unit="kcal",
           alternatives={"kJ": (_KCAL_PER_KJ, 0.0), "J": (_KCAL_PER_KJ / 1000, 0.0), "Cal": (1.0, 0.0)}, minimum=0.0),
    Metric(name="distance", unit="m",
           alternatives={"km": (1000.0, 0.0), "cm": (0.01, 0.0), "mi": (1609.344, 0.0), "ft": (0.3048, 0.0),
                         "yd": (0.9144, 0.0)}, minimum=0.0),
    Metric(name="sleep_stage", unit="category", minimum=0.0, maximum=float(max(SLEEP_STAGES)), integral=True),
    Metric(name="hrv_sdnn", unit="ms", alternatives={"s": (1000.0, 0.0)}, minimum=0.0),
    Metric(name="spo2", unit="%", alternatives={"fraction": (100.0, 0.0), "ratio": (100.0, 0.0)},
           minimum=0.0, maximum=100.0),
    Metric(name="weight", unit="kg",
           alternatives={"lb": (0.45359237, 0.0), "g": (0.001, 0.0), "st": (6.35029318, 0.0)}, minimum=0.0),
    Metric(name="respiratory_rate", unit="breaths/min", alternatives={"count/min": (1.0, 0.0)}, minimum=0.0),
    Metric(name="body_temperature", unit="degC", alternatives={"degF": (5 / 9, -32 * 5 / 9), "K": (1.0, -273.15)}),
)

REGISTRY: dict[str, Metric] = {m.name: m for m in _METRICS}


class UnknownMetric(ValueError):
    pass


class UnknownUnit(ValueError):
    pass


class OutOfRange(ValueError):
    pass


def to_canonical(metric_name: str, value: float, unit: str) -> tuple[float, str]:
    """``value`` in ``unit`` converted to the metric's canonical unit; raises on unknowns."""
    metric = REGISTRY.get(metric_name)
    if metric is None:
        raise UnknownMetric(f"unknown metric {metric_name!r}")
    if unit == metric.unit:
        converted = value
    else:
        conversion = metric.alternatives.get(unit)
        if conversion is None:
            known = ", ".join([metric.unit, *metric.alternatives]) or metric.unit
            raise UnknownUnit(f"unit {unit!r} is not known for {metric_name} (known: {known})")
        scale, offset = conversion
        converted = value * scale + offset
    if metric.minimum is not None and converted < metric.minimum:
        raise OutOfRange(f"{metric_name} must be >= {metric.minimum:g} {metric.unit}, got {converted:g}")
    if metric.maximum is not None and converted > metric.maximum:
        raise OutOfRange(f"{metric_name} must be <= {metric.maximum:g} {metric.unit}, got {converted:g}")
    if metric.integral and converted != int(converted):
        raise OutOfRange(f"{metric_name} takes whole category codes ({SLEEP_STAGES}), got {converted:g}")
    return converted, metric.unit
