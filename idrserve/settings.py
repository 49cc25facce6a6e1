"""One settings tree, from CLI flags, `IDRSERVE_*` environment variables and a TOML file.

Precedence: CLI (init arguments), then environment, then the TOML file, then defaults. Nested
groups use `__` in environment variable names (`IDRSERVE_LIMITS__MAX_TILE_LENGTH=1024`).
No module imports a settings singleton: `cli.py` builds one and passes it down, so tests can run
several apps side by side.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from idrserve.settings_errors import (
    Origins,
    SettingsError,
    check_environment,
    describe_error,
    read_toml,
)

__all__ = ["Settings", "SettingsError", "load_settings"]


class _Group(BaseModel):
    # A misspelt key in a TOML file or env var must fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Group):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=256)
    shutdown_timeout_s: float = 10.0
    # After SIGTERM, keep accepting and serving this long while /readyz answers 503
    # "draining", for load balancers that learn of a stopping backend only from readiness
    # checks (Kubernetes, HAProxy, cloud target groups). 0: close the listener at once, right
    # behind the shipped nginx, which retries another worker (proxy_next_upstream).
    drain_grace_s: float = Field(0.0, ge=0, le=300)
    # Threads for chunk decode, rendering and encoding (numpy, zarrs, simplejpeg release the GIL).
    cpu_threads: int = Field(default_factory=lambda: max(2, os.cpu_count() or 2), ge=1, le=256)
    # Added to the CPU pool threads' nice value (Linux), so the event loop, sharing their
    # core, gets it back as soon as a request arrives (idrserve/cpupool.py): the tail of
    # every request behind a pool render shrinks at no cost in throughput. 0: same priority.
    cpu_thread_nice: int = Field(10, ge=0, le=19)
    # Cold renders reading at most this many raw pixels (channels × width × height) from a
    # local Zarr v2 array run on the event-loop thread, not in the CPU pool: with one worker
    # per core the pool's thread hand-offs cost more than they overlap (+13 % cold tiles/s,
    # bench/bench_iiif.py). Over 3 × 256² a render takes two loop turns (read and decode, then
    # render and encode, about 1 ms each at 3 × 512²): 1.08x the cold 512² tiles/s of the pool
    # (1.17x greyscale), lag p99 1.5 ms (bench/results/http-two-turns-vm-2026-12-07.md,
    # bench/results/http-two-turns-grey-vm-2026-12-07.md). 0: always the pool;
    # unset: 3 × 512² when cpu_threads is 1, else 0.
    inline_render_pixels: int | None = Field(None, ge=0)
    # Inline renders per event-loop iteration when more are waiting (idrserve/turns.py): 1
    # keeps the loop's lag p99 under 2 ms at 16 connections but costs 12 % of cold 256²
    # tiles/s; 3 halves the lag p99 of unbounded batches and lowers the request p99 for 3 %
    # (bench/results/http-turns-vm-2026-12-05.md). Lag timed from the sampler's tick, 3 keeps
    # 52 % of samples under 2 ms, 2 keeps 78–85 % but costs 6–8 % and a worse request p99, 1
    # keeps 98 % for 17 % (bench/results/http-lag-vm-2026-12-05.md). Sampled with a timerfd
    # (2026-12-06): 3 keeps 56–69 %, 2 79–94 % for 0–2 %, 1 all (lag p99 2 ms) for 0–8 %
    # (bench/results/http-lag-vm-2026-12-06-d.md). Once responses were written together
    # (http/server.py, Outbox), 2 kept every sample under 2 ms (lag p99 2 ms) for 0.98-1.00x
    # the tiles/s of 3 and became the default (bench/results/http-turns-vm-2026-12-06-b.md
    # and bench/results/http-turns-vm-2026-12-06-c.md).
    # Since 2026-12-07 the count is a cap (4) and the time budget below decides: 3-channel
    # 256² tiles (0.6 ms) still go two at a time, greyscale ones (0.34 ms) four, 1.02-1.05x the
    # tiles/s of two, lag p99 2 ms either way (bench/results/http-turns-vm-2026-12-07.md).
    inline_renders_per_turn: int = Field(4, ge=1, le=64)
    # ... and no more after the first than fit in this many milliseconds, judged by the recent
    # renders' durations (idrserve/turns.py): the count adapts to what a render costs. 0: the
    # count alone.
    inline_turn_budget_ms: float = Field(1.4, ge=0.0, le=1000.0)
    # Answer a repeated URL whose image is in the memory tier as its request is parsed, before
    # aiohttp builds a request, a task and a response for it (http/fastpath.py, DirectHits):
    # same bytes, several times the hits/s (bench/bench_cache.py). Off: the middleware path.
    direct_hits: bool = True
    # A cold webgateway tile (render_image_region) planned as its request is parsed and
    # rendered in one task, without aiohttp's request, middlewares and response
    # (http/coldpath.py): same bytes, fewer µs per tile (bench/bench_http.py). Off: the
    # middleware path.
    direct_renders: bool = True
    # A whole plain GET head read by idrserve for the two above, not by aiohttp's parser
    # (http/plainhead.py): the same fields, 1.06× the cold tiles/s and 1.11× the memory
    # hits/s (docs/benchmarks.md). Off: aiohttp's parser reads every request.
    plain_heads: bool = True
    cors_origin: str = "*"
    # `Cache-Control` on rendered images; public so that nginx in front may cache them.
    cache_control: str = "public, max-age=86400"
    # The server's public URL as clients see it (scheme, host and any path prefix, e.g.
    # https://tiles.example.org/idr), for the IIIF `id`; when unset it is taken from
    # X-Forwarded-Proto/-Host/-Prefix or the request itself (http/urls.py).
    public_base_url: str | None = Field(None, pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$")
    # /readyz shows data-root, catalog and cache paths, store URLs, the OMERO host and the
    # exception behind a failed check only when this is true: anyone who can reach the port
    # can read /readyz. Off, it shows statuses and generic details (the log has the rest).
    expose_internals: bool = False

    def local_url(self) -> str:
        """The URL of this server from this machine (a wildcard address means localhost)."""
        host = "localhost" if self.host in ("", "0.0.0.0", "127.0.0.1", "::") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def inline_pixels(self) -> int:
        """`inline_render_pixels`, or its default for this many CPU threads."""
        if self.inline_render_pixels is not None:
            return self.inline_render_pixels
        return 3 * 512 * 512 if self.cpu_threads == 1 else 0


class SourceSettings(_Group):
    # Directory or URL (file://, https://, s3://) scanned for `<image id>.zarr` at any depth.
    zarr_root: str | None = None
    # Image id -> location: a built index (`idrserve catalog index`) or a CSV/JSON file
    # (indexed at start-up; see idrserve/catalog/). Loaded once, never per request.
    catalog: Path | None = None
    # HCS plates: a CSV of `plate_id,path` rows, and one of `image_id,plate_id,row,column,field`
    # naming field images (docs/plates.md); plates are also found by the catalog and scans.
    plates: Path | None = None
    plate_fields: Path | None = None
    # Where indexes built from CSV/JSON catalogs are kept (reused while the file is unchanged);
    # unset: $XDG_CACHE_HOME/idrserve/catalog (~/.cache/idrserve/catalog).
    catalog_index_dir: Path | None = None
    # How often the catalog file is checked for changes (then re-read and swapped in the
    # background; SIGHUP does it at once). 0: never.
    catalog_check_interval_s: float = Field(30.0, ge=0)
    # How long a scan of a local zarr_root is trusted before an unknown id triggers a rescan.
    rescan_interval_s: float = 60.0
    # Maximum directory depth searched below zarr_root.
    scan_max_depth: int = 6
    # Directory of ImageJ `.lut` files served as LUT channels (in addition to the built-in set).
    lut_dir: Path | None = None
    # TIFF-family files kept open (sources/tiff.py), each a file descriptor or several.
    tiff_open_files: int = Field(256, ge=1)
    # Concurrent chunk reads across the whole process (a global bound, not zarr's per-call one).
    max_concurrent_reads: int = Field(64, ge=1)
    # Read local Zarr v2 chunks directly with numcodecs instead of through zarr-python
    # (measured faster for tiles; see idrserve/sources/direct.py).
    direct_reads: bool = True
    # Open arrays and parsed image metadata kept in memory, bounded in entries and in
    # estimated bytes (sources/zarr.py `record_cost`: ~12 KiB for a typical image).
    meta_cache_entries: int = Field(4096, ge=1)
    meta_cache_max_bytes: int = Field(128 * 1024 * 1024, ge=1)
    # Local disk cache of chunks read from remote stores (S3, HTTP); None disables it.
    chunk_cache_dir: Path | None = None
    chunk_cache_max_bytes: int = Field(20 * 1024**3, ge=1)
    # S3 settings for s3:// roots and catalog entries.
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    s3_anonymous: bool = True


class LimitSettings(_Group):
    # Largest tile side; web's default is 1024, the microservice (which IDR runs) uses 2048.
    max_tile_length: int = Field(2048, ge=16)
    # Largest rendered region / plane in pixels (render_image, region=).
    max_region_pixels: int = Field(4096 * 4096, ge=1)
    max_active_channels: int = Field(10, ge=1)
    max_thumbnail_size: int = Field(1024, ge=1)
    # Largest raw read for one request (channels x planes x pixels x bytes), e.g. projections.
    max_read_bytes: int = Field(1024 * 1024 * 1024, ge=1)
    max_batch_thumbnails: int = Field(50, ge=1)
    default_thumbnail_size: int = Field(96, ge=1)
    request_timeout_s: float = Field(30.0, gt=0)
    # A request line and headers must arrive within this long of their first byte (else a
    # JSON 408 and the connection closes): a client trickling a header holds no connection for
    # long. nginx's client_header_timeout does the same in front.
    header_timeout_s: float = Field(15.0, gt=0)
    # An idle keep-alive connection is closed after this long. Keep it above the upstream
    # keepalive_timeout of the nginx in front (60 s in deploy/nginx), so that nginx, not
    # idrserve, closes idle upstream connections and never sends on one being closed.
    keepalive_timeout_s: float = Field(75.0, gt=0)
    max_url_length: int = Field(16384, ge=256)
    default_jpeg_quality: float = Field(0.85, gt=0, le=1)
    # Largest raw region of /api/v1/images/{id}/region (bytes of pixels); larger is a 413 that
    # says how to page. 256 MiB: a few 4096² uint16 planes, one notebook cell's worth.
    max_api_bytes: int = Field(256 * 1024 * 1024, ge=1)
    # Admission control (http/ops.py): requests in progress per process, cache hits included,
    # and renders (read + render + encode) in progress per process. Beyond either bound a
    # request is refused at once with 503 + Retry-After instead of joining a growing queue.
    max_concurrent_requests: int = Field(1024, ge=1)
    max_concurrent_renders: int = Field(32, ge=1)
    retry_after_s: int = Field(1, ge=0)
    # Response bodies over 1 MiB held in memory per process, from when they are produced (an
    # /api/v1 region: from before its read) until written to the client (http/bodies.py);
    # beyond it, 503 + Retry-After. Without it, clients that never read kept every body they
    # asked for: 12 of them took RSS from 189 MB to 2.59 GB.
    max_inflight_body_bytes: int = Field(512 * 1024 * 1024, ge=1)
    # A client that takes no response data for this long (data unacknowledged, or its receive
    # window shut) is disconnected by the kernel (TCP_USER_TIMEOUT, Linux) and its request slot
    # and body bytes released (http/server.py). nginx's send_timeout (60 s) is this rule.
    send_timeout_s: float = Field(60.0, gt=0)


class CacheSettings(_Group):
    """Response cache tiers (in-process memory, disk, Redis); each optional and bounded."""

    # In-process LRU of encoded responses; 0 disables it.
    memory_max_bytes: int = Field(256 * 1024 * 1024, ge=0)
    # Largest single response kept in memory.
    memory_max_item_bytes: int = Field(8 * 1024 * 1024, ge=0)
    # Local disk tier (also IDRSERVE_CACHE_DIR / IDRSERVE_CACHE_DIR_MAX_BYTES); None disables it.
    dir: Path | None = None
    dir_max_bytes: int = Field(10 * 1024**3, ge=0)
    # Recently read cache files kept open (like nginx's open_file_cache) so a hot disk hit is
    # one read; capped at a quarter of the process's open-file limit. 0 disables it.
    dir_open_files: int = Field(1024, ge=0)
    # Shared Redis tier (also IDRSERVE_REDIS_URL), e.g. redis://127.0.0.1:6379/0, or a
    # cluster or sentinels: redis+cluster://h1:6379,h2:6379 or
    # redis+sentinel://h1:26379,h2:26379/SERVICE/0 (idrserve/cache/redis_url.py).
    redis_url: str | None = None
    # Braces are not allowed: they would change the keys' cluster hash tags.
    redis_prefix: str = Field("idrs:", pattern=r"^[^{}]*$")
    redis_ttl_s: int = Field(7 * 24 * 3600, ge=1)
    redis_max_value_bytes: int = Field(4 * 1024 * 1024, ge=1)
    # Per-command timeout; a slow Redis must never slow a tile down by more than this.
    redis_timeout_s: float = Field(0.25, gt=0)
    redis_pool_size: int = Field(32, ge=1)
    # A single server's lookups and stores pipelined on one connection (cache/redis_mux.py):
    # a third of redis-py's client CPU a command under load. False: every command through
    # redis-py's pooled client. Cluster and Sentinel always use the client.
    redis_multiplex: bool = True
    # Circuit breaker: after this many consecutive failures, skip Redis for `backoff` seconds
    # (doubling up to the maximum), then probe again.
    breaker_failures: int = Field(3, ge=1)
    breaker_backoff_s: float = Field(1.0, gt=0)
    breaker_backoff_max_s: float = Field(30.0, gt=0)
    # Cross-process single-flight: a render lock in Redis (SET NX PX) and how long others wait.
    lock_ttl_ms: int = Field(10_000, ge=100)
    lock_wait_s: float = Field(3.0, ge=0)
    # How long a process trusts its copy of an image's cache generation (bumped by purge).
    generation_ttl_s: float = Field(2.0, ge=0)
    # Bounded background cache writes.
    max_pending_writes: int = Field(256, ge=1)
    # Exact URLs remembered with their resolved key, so a repeated URL is a memory hit without
    # re-parsing (http/fastpath.py); about 200 bytes each. 0 disables the index.
    url_index_entries: int = Field(100_000, ge=0)
    # ... and at most this many bytes of them (URLs up to 4 KiB are remembered).
    url_index_max_bytes: int = Field(64 * 1024 * 1024, ge=0)

    @field_validator("redis_url")
    @classmethod
    def _redis_url_parses(cls, value: str | None) -> str | None:
        if value:
            # Imported here: the cache package imports this module.
            from idrserve.cache.redis_url import parse_redis_url

            parse_redis_url(value)
        return value


class OmeroSettings(_Group):
    """Images not found as OME-Zarr are read from OMERO through the reader worker (docs/omero.md).

    OMERO is used when `host` or `worker_url` is set; otherwise nothing here matters.
    """

    # OMERO server (Glacier2 router): a host name, or a URL like wss://host/omero-ws or tcp://h.
    host: str | None = None
    port: int = Field(4064, ge=1, le=65535)
    # IDR's public account by default; the password is never logged and `config show` hides it.
    user: str = "public"
    password: SecretStr = SecretStr("public")
    # An already running worker (http://127.0.0.1:PORT or unix:/path); else one is spawned.
    worker_url: str | None = None
    # Interpreter that runs the spawned worker (needs omero-py; scripts/setup_omero.sh makes
    # .venv-omero). Unset: this interpreter if omero-py imports here, else ./.venv-omero.
    worker_python: Path | None = None
    # Global cap on OMERO calls in flight (worker lanes, and requests to the worker).
    max_concurrent_calls: int = Field(8, ge=1, le=1024)
    # Deadline of one OMERO call; past it the image answers 503 with Retry-After.
    call_timeout_s: float = Field(10.0, gt=0)
    # Logged-in sessions the worker keeps alive (re-created when they expire).
    session_pool_size: int = Field(2, ge=1, le=64)
    # Worker threads that make the blocking Ice calls.
    thread_pool_size: int = Field(8, ge=1, le=256)
    # How long image metadata (and the saved rendering settings) is trusted.
    metadata_ttl_s: float = Field(300.0, ge=0)
    meta_cache_entries: int = Field(4096, ge=1)
    # Seconds between keepAlive calls on idle sessions.
    keepalive_s: float = Field(60.0, gt=0)
    # Raw tiles kept in memory, so re-rendering a tile never asks OMERO again; 0 disables it.
    tile_cache_bytes: int = Field(64 * 1024 * 1024, ge=0)
    # Retry-After (seconds) of the 503 answered while OMERO is unreachable.
    retry_after_s: int = Field(5, ge=1)
    # Images OMERO links to an OME-Zarr (ExternalInfo, omero-zarr-pixel-buffer) are read
    # from that Zarr directly instead of through OMERO.
    ngff_direct: bool = True

    @property
    def enabled(self) -> bool:
        return bool(self.host or self.worker_url)


class ViewerSettings(_Group):
    """Values OMERO.web takes from its own configuration (imgData `interpolate`, `init_zoom`)."""

    interpolate: bool = True
    init_zoom: int = 0


class LogSettings(_Group):
    level: str = "INFO"
    access_log: bool = True
    # Access-log line format (logger `idrserve.access`): one JSON object per request, or the
    # same fields as space-separated key=value text.
    access_log_format: Literal["json", "text"] = "json"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IDRSERVE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    # Set by --config / IDRSERVE_CONFIG before the model is built (see `load_settings`).
    toml_file: ClassVar[Path | None] = None

    server: ServerSettings = Field(default_factory=ServerSettings)
    source: SourceSettings = Field(default_factory=SourceSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    viewer: ViewerSettings = Field(default_factory=ViewerSettings)
    omero: OmeroSettings = Field(default_factory=OmeroSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls.toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls.toml_file))
        return tuple(sources)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


_FLAT_ENV = {
    "IDRSERVE_REDIS_URL": "redis_url",
    "IDRSERVE_CACHE_DIR": "dir",
    "IDRSERVE_CACHE_DIR_MAX_BYTES": "dir_max_bytes",
}


def load_settings(
    overrides: dict[str, Any] | None = None,
    config_file: Path | None = None,
    override_names: Mapping[tuple[str, ...], str] | None = None,
) -> Settings:
    """Build settings; `overrides` (nested dicts, from CLI flags) win over env and file.

    Init arguments would replace a whole nested group, so the groups named by CLI flags are
    merged onto what env and file give before the final model is built. A bad value, an unknown
    key or `IDRSERVE_*` variable, or an unreadable config file raises `SettingsError`, one line
    naming it (`override_names`: the flag behind each override, for that line).
    """
    groups = {name: field.annotation for name, field in Settings.model_fields.items()}
    origins = Origins(
        groups={
            name: model
            for name, model in groups.items()
            if isinstance(model, type) and issubclass(model, BaseModel)
        },
        flat_env={env: ("cache", key) for env, key in _FLAT_ENV.items()},
        environ=dict(os.environ),
        cli={},
        cli_names=override_names or {},
        toml=None,
    )
    check_environment(origins)
    if config_file is None and os.environ.get("IDRSERVE_CONFIG"):
        config_file = Path(os.environ["IDRSERVE_CONFIG"])
        origins = replace(origins, toml=(config_file, read_toml(config_file, "IDRSERVE_CONFIG")))
    elif config_file is not None:
        origins = replace(origins, toml=(config_file, read_toml(config_file, "--config")))
    # The flat names operators know (and the issues name) map onto the nested groups.
    flat = {}
    for env, key in _FLAT_ENV.items():
        if os.environ.get(env):
            flat[key] = os.environ[env]
    cli = overrides or {}
    if flat:
        overrides = _deep_merge({"cache": flat}, cli)
    Settings.toml_file = config_file
    try:
        try:
            base = Settings()
        except ValidationError as exc:
            raise describe_error(exc, origins) from None
        if not overrides:
            return base
        merged = _deep_merge(base.model_dump(), overrides)
        Settings.toml_file = None
        try:
            return Settings(**merged)
        except ValidationError as exc:
            raise describe_error(exc, replace(origins, cli=cli)) from None
    finally:
        Settings.toml_file = None
