"""The layering rules, checked by walking every import of the project's own code.

    kernel     imports nothing of ours (usable on its own)
    storage    may import kernel
    actors     may import kernel and storage; never transport
    transport  may import actors, kernel, storage
    run.py     may import anything public

And everywhere: a module whose path has a part starting with ``_`` (``actors.ingest._lane``) is
private to the package that holds it; only modules inside that package may import it, or import
``_names`` from it. Other packages use the public names their ``__init__`` re-exports.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kernel", "storage", "actors", "transport")
MAY_IMPORT = {
    "kernel": frozenset(),
    "storage": frozenset({"kernel"}),
    "actors": frozenset({"kernel", "storage"}),
    "transport": frozenset({"actors", "kernel", "storage"}),
    "run": frozenset(PACKAGES),
}


@dataclass(frozen=True, slots=True)
class Import:
    importer: str  # dotted module name of the file
    target: str  # dotted module imported (or imported from)
    names: tuple[str, ...]  # for `from target import a, b`
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))
    yield ROOT / "run.py"


def imports_of(path: Path) -> Iterator[Import]:
    name = module_name(path)
    # The package a relative import starts from: the module's own package (itself for __init__).
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, (), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            yield Import(name, target, tuple(a.name for a in node.names), node.lineno)


def ours(target: str) -> bool:
    return target.split(".")[0] in PACKAGES


def owner_of_private(target: str) -> str | None:
    """The package a private module belongs to: ``actors.ingest._lane`` → ``actors.ingest``."""
    parts = target.split(".")
    for index, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:index])
    return None


def inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations() -> list[str]:
    found: list[str] = []
    for path in source_files():
        for imp in imports_of(path):
            if not ours(imp.target):
                continue
            where = f"{path.relative_to(ROOT)}:{imp.line}"
            layer, target_layer = imp.importer.split(".")[0], imp.target.split(".")[0]
            if target_layer != layer and target_layer not in MAY_IMPORT[layer]:
                found.append(f"{where}: {layer} must not import {target_layer} ({imp.target})")
            owner = owner_of_private(imp.target)
            if owner is not None and not inside(imp.importer, owner):
                found.append(f"{where}: {imp.target} is private to {owner}; import its public names from {owner}")
            private_names = [n for n in imp.names if n.startswith("_") and not n.startswith("__")]
            if private_names and not inside(imp.importer, owner or imp.target):
                found.append(f"{where}: imports private {', '.join(private_names)} from {imp.target}")
    return found


def test_the_project_keeps_its_layers_and_private_modules() -> None:
    assert violations() == []


@pytest.mark.parametrize("importer, source, expected", [
    ("transport._samples", "from actors.ingest._lane import IngestLane", "private to actors.ingest"),
    ("actors.supervisor._tree", "from actors.ingest._service import IngestDomain", "private to actors.ingest"),
    ("actors.ingest._lane", "import transport", "actors must not import transport"),
    ("kernel._cell", "from storage import Store", "kernel must not import storage"),
    ("storage._tx", "from kernel._policy import backoff_delay", "private to kernel"),
    ("transport._app", "from kernel import _NOTHING", "imports private _NOTHING"),
])
def test_the_walk_catches_each_kind_of_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                importer: str, source: str, expected: str) -> None:
    """The check itself can fail: each rule, broken once in a throwaway tree."""
    fake_root = tmp_path / "tree"
    module_path = fake_root / Path(*importer.split(".")).with_suffix(".py")
    module_path.parent.mkdir(parents=True)
    module_path.write_text(source + "\n")
    (fake_root / "run.py").write_text("")
    for package in PACKAGES:
        (fake_root / package).mkdir(exist_ok=True)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    found = violations()
    assert len(found) == 1 and expected in found[0], found


def test_allowed_imports_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_root = tmp_path / "tree"
    files = {
        "actors/ingest/_lane.py": "from ._samples import x\nfrom actors.ingest._units import y\nimport kernel\n",
        "actors/ingest/__init__.py": "from ._lane import IngestLane\n",
        "storage/coordination/_config.py": "from storage._config import positive\n",
        "transport/_samples.py": "from actors.ingest import UploadBody\nfrom storage import Store\n",
    }
    for rel, text in files.items():
        path = fake_root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (fake_root / "run.py").write_text("from transport import create_app\n")
    for package in PACKAGES:
        (fake_root / package).mkdir(exist_ok=True)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    assert violations() == []


def test_starting_the_service_does_not_import_the_optional_integrations() -> None:
    """The Anthropic SDK (~2 s to import here) and boto3 load on first use of the AI report or an S3
    transfer, never at start-up: a server that has neither configured starts without paying for them."""
    import subprocess

    probe = ("import sys, run; heavy = [m for m in ('anthropic', 'boto3', 'botocore', 'moto') if m in sys.modules];"
             " print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"imported at start-up: {done.stdout.strip()}"
