"""Hatchling build hook: vendor the viewer's npm assets before a wheel is built.

`pip install .` (a wheel) and `pip install -e .` (an editable wheel pointing at this tree) both
run it. The assets go into `idrserve/static/vendor/`, which git ignores; the hook lists that
folder as an artifact so the wheel carries it. See idrserve/vendor.py for the pins and the
environment variables (IDRSERVE_NPM_REGISTRY, IDRSERVE_SKIP_VENDOR).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def _load_vendor(root: Path) -> Any:
    # By path: idrserve's own dependencies are not installed in pip's build environment.
    path = root / "idrserve" / "vendor.py"
    spec = importlib.util.spec_from_file_location("_idrserve_vendor_build", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


class VendorBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return  # an sdist stays source only; the wheel built from it vendors
        if os.environ.get("IDRSERVE_SKIP_VENDOR", "").strip() not in ("", "0"):
            self.app.display_warning(
                "IDRSERVE_SKIP_VENDOR is set: building without the viewer's assets "
                "(/viewer/ and /docs answer 503 until `python -m idrserve.vendor` runs)"
            )
            return
        vendor = _load_vendor(Path(self.root))
        try:
            vendor.ensure_vendored(Path(self.root) / "idrserve" / "static" / "vendor")
        except vendor.VendorError as exc:
            raise RuntimeError(
                f"idrserve: could not fetch the viewer's npm assets: {exc}. Set "
                "IDRSERVE_NPM_REGISTRY to a reachable registry or mirror, or "
                "IDRSERVE_SKIP_VENDOR=1 to build without the viewer."
            ) from exc
        build_data["artifacts"].append("/idrserve/static/vendor/")
