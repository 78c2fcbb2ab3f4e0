"""Exports and backups to S3-compatible object storage (API.md "AI and exports").

A user's export is a durable job (``POST /v1/exports``) run by the export worker: their samples and sync
entities streamed from storage page by page as gzip JSON lines into a multipart upload, then read through a
presigned URL. ``backup_database`` / ``restore_database`` carry a whole database to the bucket and back
(``run.py backup`` / ``run.py restore KEY``).

Its errors (``ExportsError`` and below) are drawn in ``_errors``; storage's own pass through.
"""

from ._backup import BackupResult, backup_database, backup_key, parse_backup_key, restore_database
from ._errors import BackupError, DatabaseNotEmpty, ExportsError, ExportsUnavailable, UnknownExport
from ._lines import Gzipper, encode_lines, entity_line, sample_line
from ._progress import Progress, ProgressReport, progress_report, render
from ._s3 import MIN_PART_SIZE, Bucket, S3Config, classify_s3, default_s3_breaker_config
from ._service import ExportDesk, ExportsConfig, ExportsDomain, ExportsService, ExportView
from ._worker import ExportWorker, Tally, WorkerConfig, export_chunks, object_key

__all__ = [
    "MIN_PART_SIZE",
    "BackupError",
    "BackupResult",
    "Bucket",
    "DatabaseNotEmpty",
    "ExportDesk",
    "ExportView",
    "ExportWorker",
    "ExportsConfig",
    "ExportsDomain",
    "ExportsError",
    "ExportsService",
    "ExportsUnavailable",
    "Gzipper",
    "Progress",
    "ProgressReport",
    "S3Config",
    "Tally",
    "UnknownExport",
    "WorkerConfig",
    "backup_database",
    "backup_key",
    "classify_s3",
    "default_s3_breaker_config",
    "encode_lines",
    "entity_line",
    "export_chunks",
    "object_key",
    "parse_backup_key",
    "progress_report",
    "render",
    "restore_database",
    "sample_line",
]
