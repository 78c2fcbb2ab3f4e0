"""The application's supervision tree, its infrastructure actors, and the bundle of domain facades."""

from ._telemetry_collector import Snapshot, TelemetryCollector, TelemetrySnapshot
from ._tree import ROLES, Application, Role, Services, TreeConfig, application, root_tree

__all__ = ["ROLES", "Application", "Role", "Services", "Snapshot", "TelemetryCollector", "TelemetrySnapshot",
           "TreeConfig", "application", "root_tree"]
