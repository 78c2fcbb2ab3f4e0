"""The application's supervision tree and its infrastructure actors."""

from ._telemetry_collector import Snapshot, TelemetryCollector, TelemetrySnapshot
from ._tree import TreeConfig, root_tree

__all__ = ["Snapshot", "TelemetryCollector", "TelemetrySnapshot", "TreeConfig", "root_tree"]
