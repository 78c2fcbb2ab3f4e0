"""Build the single binary ``dist/vigil`` (PyInstaller one-file, see deploy/vigil.spec), unless the one there
was built from the same inputs.

    .venv/bin/python deploy/build_binary.py [--force] [--quiet]      (``make binary``)

The inputs are every file of the four packages, run.py, this script, the spec, pyproject.toml,
constraints.txt, the interpreter's version and the installed distributions' versions; their SHA-256 is kept
in ``build/vigil.key``. A build writes ``dist/vigil`` atomically (built beside it, then renamed), then
reports its size and how long ``vigil --version`` takes to start cold (the one-file bootloader unpacks
itself to a temporary folder on every start). The last line printed is one JSON object:
``{"binary": path, "built": bool, "bytes": int, "build_s": float|null, "version_start_s": float}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "deploy" / "vigil.spec"
BINARY = ROOT / "dist" / "vigil"
WORK = ROOT / "build" / "pyinstaller"
KEY = ROOT / "build" / "vigil.key"
PACKAGES = ("kernel", "storage", "actors", "transport")
SINGLE_FILES = ("run.py", "deploy/build_binary.py", "deploy/vigil.spec", "pyproject.toml", "constraints.txt")


def _source_files() -> list[Path]:
    files = [ROOT / name for name in SINGLE_FILES]
    for package in PACKAGES:
        files += (p for p in (ROOT / package).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo"))
    return sorted(files)


def source_key() -> str:
    """What the binary is built from: a change to any of it means a rebuild."""
    digest = hashlib.sha256()
    digest.update(f"{sys.version} {platform.machine()}\n".encode())
    dists = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions())
    digest.update("\n".join(dists).encode())
    for path in _source_files():
        digest.update(f"\0{path.relative_to(ROOT)}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def is_current(key: str) -> bool:
    return BINARY.is_file() and KEY.is_file() and KEY.read_text().strip() == key


def build(key: str, *, quiet: bool) -> float:
    """Run PyInstaller; returns the seconds it took."""
    staging = WORK / "dist"
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
           "--distpath", str(staging), "--workpath", str(WORK), str(SPEC)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=quiet, text=True)
    if result.returncode != 0:
        detail = (result.stderr or "")[-4000:] if quiet else ""
        raise SystemExit(f"build_binary: PyInstaller failed ({result.returncode}){detail and ':'}\n{detail}")
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging / "vigil", BINARY)  # a running test or bench never sees half a binary
    KEY.write_text(key + "\n")
    return time.perf_counter() - started


def version_start_seconds() -> float:
    """Wall time of ``vigil --version``: unpacking, the interpreter, run.py's imports."""
    started = time.perf_counter()
    subprocess.run([str(BINARY), "--version"], check=True, capture_output=True, env={"PATH": "/usr/bin:/bin"})
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="build even when dist/vigil is up to date")
    parser.add_argument("--quiet", action="store_true", help="show PyInstaller's output only if it fails")
    args = parser.parse_args()
    key = source_key()
    build_s = None
    if args.force or not is_current(key):
        print(f"building {BINARY.relative_to(ROOT)} with PyInstaller (one file) ...", flush=True)
        build_s = round(build(key, quiet=args.quiet), 1)
    else:
        print(f"{BINARY.relative_to(ROOT)} is up to date (build/vigil.key matches the sources)")
    size = BINARY.stat().st_size
    start = round(version_start_seconds(), 3)
    print(f"{BINARY.relative_to(ROOT)}: {size / 2**20:.1f} MiB, `vigil --version` starts in {start:.2f} s"
          + (f", built in {build_s:.0f} s" if build_s is not None else ""))
    print(json.dumps({"binary": str(BINARY), "built": build_s is not None, "bytes": size, "build_s": build_s,
                      "version_start_s": start}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
