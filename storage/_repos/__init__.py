"""The repositories, written once for both backends, one module per aggregate.

``base`` holds what they share (a new repository starts from ``base.Repo``); each other module
holds the repositories of one aggregate and, beside them, their SQL as module-level statements
(run by the backends' drivers, see ``storage._sql``).
"""

from .ai import AiReports, AiUsageLog
from .checkpoints import Checkpoints
from .exports import Exports
from .impact import ProductImpacts, SessionImpacts, Sessions
from .ingest import Ingest
from .outbox import DeadLetters, Outbox
from .projections import Rollups, Sleep, Watermarks
from .samples import SamplePreparer, Samples
from .sync import Changes, Conflicts, Devices, Entities, SyncOps
from .users import Users

__all__ = [
    "AiReports",
    "AiUsageLog",
    "Changes",
    "Checkpoints",
    "Conflicts",
    "DeadLetters",
    "Devices",
    "Entities",
    "Exports",
    "Ingest",
    "Outbox",
    "ProductImpacts",
    "Rollups",
    "SamplePreparer",
    "Samples",
    "SessionImpacts",
    "Sessions",
    "Sleep",
    "SyncOps",
    "Users",
    "Watermarks",
]
