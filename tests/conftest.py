"""The suite-wide audit of public error bodies (see `tests/leaks.py`).

Every JSON error body an in-process app builds during the run goes through
`idrserve.http.middleware.error_body`; this plugin wraps it and checks each body as it is
built. At the end of the session, any body that carries a server path, a temporary
directory, a URL with a password, a traceback or exception text fails the run (exit status 1),
and the offending bodies are printed with the request that provoked them, whatever the tests
themselves asserted. Servers started as subprocesses are not seen here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.leaks import LeakChecker, request_echo, server_paths

# What the client sent, while an error response for it is being built.
_ECHO: ContextVar[str] = ContextVar("error_echo", default="")


@dataclass
class _Audit:
    checker: LeakChecker | None = None
    bodies: int = 0
    leaks: list[tuple[dict[str, object], str, list[str]]] = field(default_factory=list)


_AUDIT = _Audit()


def _checker(config: pytest.Config) -> LeakChecker:
    if _AUDIT.checker is None:
        factory = getattr(config, "_tmp_path_factory", None)  # pytest's, set by tmpdir plugin
        basetemp = factory.getbasetemp() if factory is not None else None
        _AUDIT.checker = LeakChecker(server_paths(basetemp))
    return _AUDIT.checker


def _replace_everywhere(original: Any, replacement: Any) -> None:
    """Rebind `original` in every idrserve module that imported it by name."""
    for name, module in list(sys.modules.items()):
        if name == "idrserve" or name.startswith("idrserve."):
            for attr, value in list(vars(module).items()):
                if value is original:
                    setattr(module, attr, replacement)


def pytest_configure(config: pytest.Config) -> None:
    from idrserve.http import middleware, server

    build = middleware.error_body
    respond = middleware.error_response
    handle_error = server.JsonErrorRequestHandler.handle_error

    def error_body(code: str, detail: str, rid: str, param: str | None = None) -> dict[str, object]:
        body = build(code, detail, rid, param)
        _AUDIT.bodies += 1
        echo = _ECHO.get()
        found = _checker(config).leaks(body, echo)
        if found:
            _AUDIT.leaks.append((dict(body), echo.partition("\n")[0], found))
        return body

    def with_echo(fn: Callable[..., Any], request: Any, *args: Any, **kwargs: Any) -> Any:
        headers = list(request.headers.values()) if request is not None else []
        token = _ECHO.set(request_echo(request.raw_path, headers) if request is not None else "")
        try:
            return fn(request, *args, **kwargs)
        finally:
            _ECHO.reset(token)

    def error_response(request: Any, *args: Any, **kwargs: Any) -> Any:
        return with_echo(respond, request, *args, **kwargs)

    def audited_handle_error(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        return with_echo(
            lambda r, *a, **k: handle_error(self, r, *a, **k), request, *args, **kwargs
        )

    _replace_everywhere(build, error_body)
    _replace_everywhere(respond, error_response)
    server.JsonErrorRequestHandler.handle_error = audited_handle_error  # type: ignore[method-assign]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _AUDIT.leaks and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _AUDIT.leaks:
        if _AUDIT.bodies:
            terminalreporter.write_line(
                f"error-body audit: {_AUDIT.bodies} JSON error bodies checked, no leaks"
            )
        return
    terminalreporter.write_sep("=", "error bodies leaking internals", red=True)
    for body, request, found in _AUDIT.leaks[:50]:
        terminalreporter.write_line(f"{request or '(no request)'}: {'; '.join(found)}")
        terminalreporter.write_line(f"    {body}")
    terminalreporter.write_line(
        f"{len(_AUDIT.leaks)} of {_AUDIT.bodies} error bodies leak (tests/leaks.py); the run fails"
    )
