"""Bad settings as one line each: the setting, where it came from and what is expected.

pydantic reports a bad value as a multi-line `ValidationError` naming the model path
(`server.port`), not the variable, flag or file the operator wrote, and pydantic-settings
ignores an `IDRSERVE_*` variable whose group is unknown (`IDRSERVE_SEVRER__PORT`). Here every
`IDRSERVE_*` name is checked against the settings tree, and each error is turned back into the
operator's own spelling, with a did-you-mean when a known name is close.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

# IDRSERVE_* variables that are not settings: knobs of the build (hatch_build.py), the scripts,
# the benchmarks, the compose file and the tests. Every other IDRSERVE_* name must be a setting.
OTHER_ENV = frozenset(
    {
        "IDRSERVE_NPM_REGISTRY",
        "IDRSERVE_SKIP_VENDOR",
        "IDRSERVE_NO_NUMBA",
        "IDRSERVE_OMERO_VENV",
        "IDRSERVE_OMERO_PYTHON",
        "IDRSERVE_OMERO_ICE_SPEC",
        "IDRSERVE_OMERO_PY_SPEC",
        "IDRSERVE_LOCUST_IMAGES",
        "IDRSERVE_LOCUST_MAX_IMAGES",
        "IDRSERVE_BENCH_URLS",
        "IDRSERVE_BENCH_RUN",
        "IDRSERVE_ZARR_DIR",
        "IDRSERVE_HTTP_PORT",
    }
)
OTHER_ENV_PREFIX = "IDRSERVE_TEST_"


class SettingsError(ValueError):
    """A setting that cannot be used, in one line: its name, its origin, what is expected."""


@dataclass(frozen=True, slots=True)
class Origins:
    """Everything a setting may come from, to name the one behind an error."""

    groups: Mapping[str, type[BaseModel]]
    # Flat environment names (IDRSERVE_REDIS_URL) and the setting each one sets.
    flat_env: Mapping[str, tuple[str, str]]
    environ: Mapping[str, str]
    # The CLI's overrides, and the flag that gave each (`("server", "port")` -> `--port`).
    cli: Mapping[str, Any]
    cli_names: Mapping[tuple[str, ...], str]
    toml: tuple[Path, dict[str, Any]] | None

    def paths(self) -> list[tuple[str, ...]]:
        """Every group, and every (group, key), of the settings tree."""
        out: list[tuple[str, ...]] = []
        for group, model in self.groups.items():
            out.append((group,))
            out += [(group, key) for key in model.model_fields]
        return out


def env_name(path: tuple[str, ...]) -> str:
    return "IDRSERVE_" + "__".join(path).upper()


def _suggest(wrong: str, candidates: Mapping[str, str]) -> str | None:
    """The known names closest to `wrong`; both are dotted lower-case paths (`server.port`).

    Failing a close spelling, the groups that have the key (`zarr_root`: `source.zarr_root`,
    too far off for difflib's ratio).
    """
    # A misspelt key is no group: `limits.foo` must not suggest `limits`.
    names = [c for c in candidates if "." in c or "." not in wrong]
    last = wrong.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(wrong, names, n=1, cutoff=0.75) or [
        c for c in names if "." in c and c.rsplit(".", 1)[-1] == last and c != wrong
    ]
    return " or ".join(candidates[c] for c in close[:2]) or None


def check_environment(origins: Origins) -> None:
    """Refuse an IDRSERVE_* variable that is no setting (pydantic-settings ignores most)."""
    known = {".".join(path): env_name(path) for path in origins.paths()}
    known |= {env.removeprefix("IDRSERVE_").lower(): env for env in origins.flat_env}
    known["config"] = "IDRSERVE_CONFIG"
    for name in sorted(origins.environ):
        upper = name.upper()  # pydantic-settings matches names case-insensitively
        if not upper.startswith("IDRSERVE_") or upper in known.values():
            continue
        if upper in OTHER_ENV or upper.startswith(OTHER_ENV_PREFIX):
            continue
        wrong = upper.removeprefix("IDRSERVE_").lower().replace("__", ".")
        hint = _suggest(wrong, known)
        if hint:
            raise SettingsError(f"unknown setting {name} in the environment (did you mean {hint}?)")
        group = wrong.partition(".")[0]
        form = (
            f"IDRSERVE_{group.upper()}__<KEY> with a key of [{group}]"
            if "." in wrong and group in origins.groups
            else f"IDRSERVE_<GROUP>__<KEY> with GROUP one of {', '.join(origins.groups)}"
        )
        raise SettingsError(
            f"unknown setting {name} in the environment: expected {form} "
            "(`idrserve config show` lists every key)"
        )


def read_toml(path: Path, origin: str) -> dict[str, Any]:
    """The TOML file `path` (named by `origin`: --config or IDRSERVE_CONFIG) as a dict."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SettingsError(f"config file {path} (from {origin}) does not exist") from None
    except OSError as exc:
        raise SettingsError(f"config file {path} (from {origin}): {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(
            f"config file {path} is not valid TOML ({exc}): expected [group] tables of "
            "key = value lines, e.g. [server] then port = 8080"
        ) from None


def _shown(path: tuple[str, ...], value: Any) -> str:
    """A value for an error message: secrets hidden, passwords in URLs redacted, kept short."""
    if path == ("omero", "password") or isinstance(value, SecretStr):
        return "***"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = re.sub(r"(://[^/:@\s]*:)[^/@\s]*@", r"\1***@", text)
    text = text if len(text) <= 60 else text[:57] + "..."
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)  # one line


def _has(tree: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = tree
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _origin(path: tuple[str, ...], value: Any, origins: Origins) -> str:
    """Where the value at `path` came from, highest precedence first, as the operator wrote it."""
    dotted = ".".join(path)
    if _has(origins.cli, path):
        flag = origins.cli_names.get(path, "the command line")
        return f"{flag} {_shown(path, value)} ({dotted})"
    env = {name.upper(): name for name in origins.environ}
    flat = [name for name, target in origins.flat_env.items() if target == path]
    for name in (*flat, env_name(path), env_name(path[:1])):
        if name in env:
            return f"{env[name]}={_shown(path, value)}"
    quoted = _shown(path, json.dumps(value, default=str))
    if origins.toml is not None and _has(origins.toml[1], path):
        return f"{dotted} = {quoted} in {origins.toml[0]}"
    return f"{dotted} = {quoted}"


def describe_error(exc: ValidationError, origins: Origins) -> SettingsError:
    """The first error of `exc` as one line naming the setting, its origin and what is expected."""
    errors = exc.errors()
    first = errors[0]
    path = tuple(str(part) for part in first["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        dotted = ".".join(path)
        toml = origins.toml
        where = f" in {toml[0]}" if toml is not None and _has(toml[1], path) else ""
        hint = _suggest(dotted, {".".join(p): ".".join(p) for p in origins.paths()})
        if hint:
            return SettingsError(f"unknown setting {dotted}{where} (did you mean {hint}?){more}")
        form = (
            f"a key of [{path[0]}]"
            if len(path) > 1 and path[0] in origins.groups
            else f"[group] one of {', '.join(origins.groups)}"
        )
        return SettingsError(
            f"unknown setting {dotted}{where}: expected {form} "
            f"(`idrserve config show` lists every key){more}"
        )
    msg = str(first["msg"])  # "Input should be a valid integer", "String should match …"
    if msg.startswith("Input should be "):
        expected = "expected " + msg.removeprefix("Input should be ")
    else:
        expected = msg[:1].lower() + msg[1:]
    return SettingsError(f"{_origin(path, first.get('input'), origins)}: {expected}{more}")
