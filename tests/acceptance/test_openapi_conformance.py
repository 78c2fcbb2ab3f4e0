"""The published OpenAPI document says exactly what the server accepts and answers.

schemathesis 4 runs every operation of ``/openapi.json`` against a real ``run.py serve`` with all of
its checks (schema-valid requests accepted, schema-violating ones refused, statuses, headers and
bodies as documented, ...), with a user token and the operator token as the document's security
schemes ask. Its own randomness is seeded (``VIGIL_SCHEMATHESIS_SEED`` to explore another part).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.ai_helpers import fake_anthropic
from tests.exports_helpers import moto_server
from tests.ingest_helpers import OPS_TOKEN, REPO, SECRET, running_server
from transport import issue_token

HERE = Path(__file__).resolve().parent / "openapi_conformance"
SEED = os.environ.get("VIGIL_SCHEMATHESIS_SEED", "20261202")

pytestmark = pytest.mark.slow


def _cli() -> list[str]:
    return [sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"]


async def test_schemathesis_finds_no_mismatch_in_any_operation(tmp_path: Path) -> None:
    with moto_server() as moto, fake_anthropic() as fake:
        # Exports go to S3 (moto's server on loopback) and the AI weekly report to a fake Messages API, as in a
        # configured deployment: unconfigured, both could only answer 503.
        s3 = moto.new_bucket()
        await _run_schemathesis(tmp_path, {
            "VIGIL_S3_ENDPOINT_URL": moto.endpoint, "VIGIL_S3_BUCKET": s3.bucket,
            "VIGIL_S3_ACCESS_KEY_ID": s3.access_key_id, "VIGIL_S3_SECRET_ACCESS_KEY": s3.secret_access_key,
            "VIGIL_ANTHROPIC_API_KEY": "sk-ant-conformance", "VIGIL_ANTHROPIC_BASE_URL": fake.url})


async def _run_schemathesis(tmp_path: Path, server_env: dict[str, str]) -> None:
    async with running_server(tmp_path, "--decode-processes", "0", env=server_env) as server:
        env = {**os.environ,
               "VIGIL_SCHEMATHESIS_USER_TOKEN": issue_token(SECRET, "schemathesis-user"),
               "VIGIL_SCHEMATHESIS_OPS_TOKEN": OPS_TOKEN,
               "SCHEMATHESIS_HOOKS": str(HERE / "hooks.py"),
               "PYTHONPATH": str(REPO)}
        argv = [*_cli(), "--config-file", str(HERE / "schemathesis.toml"), "run", f"{server.base}/openapi.json",
                "--checks", "all", "--seed", SEED, "--workers", "1", "--max-examples", "60",
                "--suppress-health-check", "too_slow", "--no-color"]
        with trio.fail_after(300):
            done = await trio.run_process(argv, cwd=tmp_path, env=env, capture_stdout=True,
                                          capture_stderr=True, check=False)
        report = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        assert done.returncode == 0, f"schemathesis found mismatches:\n{report}"
        assert "9 selected" in report or "selected" in report
        # the operations it exercised: every HTTP one the document lists
        assert "Tested:" in report, report


def test_the_cli_is_installed() -> None:
    """schemathesis comes with the dev dependencies (pyproject, constraints.txt), so CI has it."""
    done = subprocess.run([*_cli(), "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "4." in done.stdout, done.stdout + done.stderr
