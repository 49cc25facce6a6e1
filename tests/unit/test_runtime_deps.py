"""Every third-party module the package imports is installed by `pip install .` alone.

CI installs the test extras as well, so an import that only they satisfy passes every test
and still breaks the README's first command on a fresh machine: Pillow, imported at start-up
for the plate montages (http/plate_images.py), was a test dependency only until 2026-12-07,
and `pip install . && idrserve demo` stopped with ModuleNotFoundError. This reads the
package's imports from its source and the runtime requirements' closure from the installed
distributions' metadata (extras and markers as pip resolves them here).
"""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
# Imported only by the OMERO worker, which runs in a virtualenv of its own
# (scripts/setup_omero.sh, docs/omero.md): omero-py needs zeroc-ice 3.6, built for Python
# <= 3.10 only, so it cannot be a dependency of the server's package.
OWN_VIRTUALENV = {"omero", "Ice", "Glacier2"}


def runtime_closure() -> set[str]:
    """Canonical names of the distributions `pip install .` brings, transitively."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [(Requirement(text), "") for text in project["dependencies"]]
    seen: set[tuple[str, str]] = set()
    names: set[str] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        names.add(name)
        for wanted in ("", *sorted(req.extras)):
            if (name, wanted) in seen:
                continue
            seen.add((name, wanted))
            todo.extend((Requirement(text), wanted) for text in metadata.requires(name) or [])
    return names


def third_party_imports() -> dict[str, set[str]]:
    """Top-level modules imported anywhere in the package (functions included), with the
    files importing each."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "idrserve").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top != "idrserve":
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_import_comes_with_the_runtime_dependencies() -> None:
    closure = runtime_closure()
    providers = metadata.packages_distributions()
    missing = {
        module: sorted(files)
        for module, files in third_party_imports().items()
        if module not in OWN_VIRTUALENV
        and not any(canonicalize_name(d) in closure for d in providers.get(module, []))
    }
    assert missing == {}, f"imported, but not installed by `pip install .`: {missing}"


def test_the_closure_holds_runtime_dependencies_and_no_test_ones() -> None:
    closure = runtime_closure()
    # through extras and other packages' requirements: redis[hiredis], aiohttp's multidict
    assert {"pillow", "hiredis", "multidict", "numpy"} <= closure
    # only the test extra brings these: were they counted, the check above could not fail
    assert not {"selenium", "pytest", "locust", "ome-zarr"} & closure
