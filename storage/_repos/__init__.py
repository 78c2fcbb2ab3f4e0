"""The repositories, written once for both backends, one module per aggregate.

``base`` holds what they share; each other module holds its repositories and, beside them,
their SQL as module-level statements (run by the backends' drivers, see ``storage._sql``).
"""

from .base import Repo, Row
from .ingest import Ingest
from .outbox import DeadLetters, Outbox
from .projections import Checkpoints, Rollups, Sleep, Watermarks
from .samples import SamplePreparer, Samples
from .sync import Changes, Conflicts, Devices, Entities, SyncOps
from .users import Users

__all__ = [
    "Changes",
    "Checkpoints",
    "Conflicts",
    "DeadLetters",
    "Devices",
    "Entities",
    "Ingest",
    "Outbox",
    "Repo",
    "Rollups",
    "Row",
    "SamplePreparer",
    "Samples",
    "Sleep",
    "SyncOps",
    "Users",
    "Watermarks",
]
