"""The application's supervision tree and its infrastructure actors."""

from ._telemetry_collector import Snapshot, TelemetryCollector, TelemetrySnapshot
from ._tree import Application, TreeConfig, application, root_tree

__all__ = ["Application", "Snapshot", "TelemetryCollector", "TelemetrySnapshot", "TreeConfig", "application",
           "root_tree"]
