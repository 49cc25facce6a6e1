"""Which parts of the HTTP stack run compiled, checked once when a server starts.

aiohttp, multidict, yarl and propcache each ship a C (Cython) implementation and a pure-Python
fallback, and fall back silently: when `AIOHTTP_NO_EXTENSIONS` is set, or when a wheel for the
platform was missing and the source build skipped its extensions. The server still works, but
aiohttp's pure-Python request parser alone costs about 48 µs a request on this project's bench
core (866 against 818 µs of CPU per cold 256² tile, docs/operations.md), a tenth of a cache hit
several times over. `serve` logs a warning naming each fallback, so an operator sees it in the
first lines of the log instead of in a slower benchmark. uvloop is optional (plain asyncio
works, about 20 % slower per request) and its absence is logged too.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _module_of(module: str, attr: str) -> str:
    return str(getattr(importlib.import_module(module), attr).__module__)


def _aiohttp_parser() -> bool:
    return _module_of("aiohttp.http_parser", "HttpRequestParser") == "aiohttp._http_parser"


def _aiohttp_writer() -> bool:
    writer = importlib.import_module("aiohttp.http_writer")
    python = getattr(writer, "_py_serialize_headers", None)
    return python is None or writer._serialize_headers is not python


def _multidict() -> bool:
    return _module_of("multidict", "MultiDict") == "multidict._multidict"


def _yarl() -> bool:
    return _module_of("yarl._quoting", "_Quoter") == "yarl._quoting_c"


def _propcache() -> bool:
    return _module_of("propcache.api", "under_cached_property") == "propcache._helpers_c"


# What, and how to tell whether its compiled version is in use.
_CHECKS: tuple[tuple[str, Callable[[], bool]], ...] = (
    ("aiohttp's HTTP parser", _aiohttp_parser),
    ("aiohttp's header writer", _aiohttp_writer),
    ("multidict", _multidict),
    ("yarl's URL quoting", _yarl),
    ("propcache", _propcache),
)


def python_fallbacks() -> list[str]:
    """The parts of the HTTP stack running as pure Python in this process (empty: all compiled).

    A library whose internals moved (a check that cannot find its attribute) is not reported:
    this is advice for operators, not a gate.
    """
    slow = []
    for name, compiled in _CHECKS:
        try:
            if not compiled():
                slow.append(name)
        except (ImportError, AttributeError):
            continue
    return slow


def uvloop_running() -> bool:
    """Whether the running event loop is uvloop's."""
    return type(asyncio.get_running_loop()).__module__.startswith("uvloop")


def startup_warnings() -> list[str]:
    """One line per fallback, for `serve` to log at start."""
    return [
        f"{name} runs as pure Python (AIOHTTP_NO_EXTENSIONS set, or a build without its C "
        "extension): every request is slower; reinstall the wheels (docs/operations.md)"
        for name in python_fallbacks()
    ]


async def log_fallbacks(_app: object) -> None:
    """An `on_startup` hook of a served app: the warnings above, and uvloop's absence."""
    for line in startup_warnings():
        log.warning(line)
    if not uvloop_running():
        log.info("uvloop is not in use: plain asyncio costs about 20 %% more per request")
