"""Architecture is tested (ARCHITECTURE.md): the import-linter contracts of pyproject.toml
run with the suite, so a wrong arrow fails CI instead of waiting for a review."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command as lint; sys.exit(lint())",
]


def test_import_contracts_are_kept():
    result = subprocess.run(
        [*LINT_IMPORTS, "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every contract was read and checked (a typo in the config must not pass silently).
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    expected = len(contracts["contracts"])
    assert f"Contracts: {expected} kept, 0 broken." in result.stdout, result.stdout


def test_worker_runtime_needs_only_the_standard_library_and_requests():
    """What a forbidden contract cannot say: the runtime's complete list of outside imports,
    so ``pip install`` of the worker needs nothing but ``requests``."""
    graph = grimp.build_graph("workers", include_external_packages=True, cache_dir=None)
    imported = set()
    for module in graph.find_descendants("workers.runtime") | {"workers.runtime"}:
        imported |= graph.find_modules_directly_imported_by(module)
    outside = {name.split(".")[0] for name in imported if not name.startswith("workers.runtime")}
    assert outside - set(sys.stdlib_module_names) == {"requests"}
