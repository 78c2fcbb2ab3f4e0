"""The exports domain's wiring and its facade.

    exports (one_for_one)
     ├── desk      ExportDesk: creates and reads users' export jobs (and signs a completed one's URL)
     │   -- the worker role only, and only with object storage configured: --
     └── worker    ExportWorker: claims due jobs, streams them to the bucket, records the outcome

``ExportsDomain`` builds the subtree (and the ``Bucket`` its actors share, with the S3 circuit breaker, which
may be injected) before the system starts; ``service(system)`` gives the ``ExportsService`` the HTTP layer calls.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kernel import Actor, ActorRef, ActorSystem, ChildSpec, CircuitBreaker, Supervisor
from storage import ExportJob, ExportStatus, Store

from ._errors import ExportsUnavailable, UnknownExport
from ._messages import CreateExport, ReadExport, Tick
from ._s3 import Bucket, S3Config
from ._worker import ExportWorker, WorkerConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportsConfig:
    s3: S3Config | None = None  # None: exports answer 503 EXPORTS_UNAVAILABLE
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    ask_timeout: float = 10.0
    run_workers: bool = True  # False in the web role


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportView:
    """An export as its owner sees it: ``url`` (presigned, valid until ``url_expires_at``) once completed,
    ``error`` (the reason) once failed."""

    export_id: str
    status: ExportStatus
    url: str | None
    url_expires_at: datetime | None
    error: str | None
    rows: int | None
    bytes: int | None
    created_at: datetime


class ExportDesk(Actor):
    """Job rows for the HTTP layer; signs a completed export's URL (locally: no request to the bucket)."""

    def __init__(self, *, store: Store, bucket: Bucket | None, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.bucket = bucket
        self.clock = clock

    async def receive(self, msg: Any) -> Any:
        match msg:
            case CreateExport(user_id=user_id, export_id=export_id):
                async with self.store.transaction() as tx:
                    (job,) = await tx.commit(tx.exports.create(user_id, export_id))
                return await self._view(job)
            case ReadExport(user_id=user_id, export_id=export_id):
                async with self.store.transaction(readonly=True) as tx:
                    (found,) = await tx.commit(tx.exports.get(user_id, export_id))
                return None if found is None else await self._view(found)
            case _:
                raise TypeError(f"export desk: unexpected message {msg!r}")

    async def _view(self, job: ExportJob) -> ExportView:
        url = expires = None
        if job.status == "completed" and job.object_key is not None and self.bucket is not None:
            expires = self.clock() + timedelta(seconds=self.bucket.config.presign_seconds)
            url = await self.bucket.presign(job.object_key)
        return ExportView(export_id=job.id, status=job.status, url=url, url_expires_at=expires, error=job.error,
                          rows=job.rows, bytes=job.bytes, created_at=job.created_at)


class ExportsDomain:
    name = "exports"

    def __init__(self, store: Store, config: ExportsConfig | None = None, *, breaker: CircuitBreaker | None = None,
                 owner: str, rng: random.Random | None = None) -> None:
        self.store = store
        self.config = config or ExportsConfig()
        self.owner = owner
        self.rng = rng or random.SystemRandom()
        # The S3 breaker: the shared per-dependency registry passes its own; otherwise the bucket makes one.
        self.bucket = Bucket(self.config.s3, breaker=breaker, rng=self.rng) if self.config.s3 is not None else None

    @property
    def runs_worker(self) -> bool:
        return self.config.run_workers and self.bucket is not None

    def subtree(self) -> Supervisor:
        children: list[ChildSpec | Supervisor] = [
            ChildSpec("desk", ExportDesk, kwargs={"store": self.store, "bucket": self.bucket,
                                                  "clock": self.store.config.clock}, mailbox=64),
        ]
        if self.runs_worker:
            children.append(ChildSpec("worker", ExportWorker, kwargs={
                "store": self.store, "bucket": self.bucket, "config": self.config.worker, "owner": self.owner},
                mailbox=8, overflow="drop_oldest", shutdown_timeout=5.0))
        return Supervisor(self.name, strategy="one_for_one", max_restarts=20, within=60.0, base_delay=0.1,
                          max_delay=5.0, children=children)

    def service(self, system: ActorSystem, *, under: str = "root") -> ExportsService:
        path = f"{under}/{self.name}"
        worker = system.ref(f"{path}/worker") if self.runs_worker else None
        return ExportsService(desk=system.ref(f"{path}/desk"), worker=worker, domain=self)


class ExportsService:
    """Users' exports: request one, read its status (and, once completed, a presigned URL)."""

    def __init__(self, *, desk: ActorRef, worker: ActorRef | None, domain: ExportsDomain) -> None:
        self._desk = desk
        self._worker = worker
        self._bucket = domain.bucket
        self._rng = domain.rng
        self._timeout = domain.config.ask_timeout

    async def request(self, user_id: str) -> ExportView:
        """A new pending export of everything ``user_id`` has; ExportsUnavailable when no object storage is
        configured or its breaker is open (the job would only fail)."""
        if self._bucket is None:
            raise ExportsUnavailable("exports are not configured on this server (VIGIL_S3_*)")
        self._bucket.check_available()
        export_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        view = await self._desk.ask(CreateExport(user_id=user_id, export_id=export_id), timeout=self._timeout)
        assert isinstance(view, ExportView)
        if self._worker is not None:
            await self._worker.tell(Tick())  # start now rather than at the next poll
        return view

    async def get(self, user_id: str, export_id: str) -> ExportView:
        """The export if it is ``user_id``'s; UnknownExport otherwise (another user's reads the same)."""
        view = await self._desk.ask(ReadExport(user_id=user_id, export_id=export_id), timeout=self._timeout)
        if view is None:
            raise UnknownExport(export_id)
        assert isinstance(view, ExportView)
        return view

    async def run_due(self) -> None:
        """Claim and run what is due now instead of at the next poll (a no-op without a worker here)."""
        if self._worker is not None:
            await self._worker.tell(Tick())


__all__ = ["ExportDesk", "ExportView", "ExportsConfig", "ExportsDomain", "ExportsService"]
