"""`idrserve logs report` on bad and awkward input, and the bounded structures behind it.

Logs are generated here line by line with known contents, so every expected figure is
computed from what was written, not typed in.
"""

from __future__ import annotations

import gzip
import json
import math
import random
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from idrserve.cli import main
from idrserve.logs.classify import cache_key, client_kind, family, image_id
from idrserve.logs.cli import run_report
from idrserve.logs.parse import order_logs
from idrserve.logs.replay import CacheReplay, Distinct, TopTable, key_hash

T0 = 1_796_000_000.0  # 2026-11-30
UA = {
    "browser": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36",
    "library": "python-requests/2.31.0",
    "crawler": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
}


def nginx_line(
    ts: float,
    target: str,
    status: int = 200,
    size: int = 1000,
    rt: float = 0.01,
    cache: str = "MISS",
    xcache: str = "miss",
    agent: str = UA["browser"],
) -> str:
    when = datetime.fromtimestamp(ts, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    return (
        f'10.0.0.1 - - [{when}] "GET {target} HTTP/1.1" {status} {size} "-" "{agent}" '
        f"rt={rt:.3f} cache={cache or '-'} xcache={xcache or '-'}\n"
    )


def json_line(ts: float, route: str, status: int = 200, size: int = 500, **extra: Any) -> str:
    doc = {
        "ts": round(ts, 3),
        "request_id": "abc-1",
        "method": "GET",
        "route": route,
        "status": status,
        "bytes": size,
        "duration_ms": 12.5,
        "cache": "memory",
        "client": "127.0.0.1",
    }
    return json.dumps(doc | extra) + "\n"


TILE = "/webgateway/render_image_region/{iid}/{z}/{t}/"


def tile(iid: int, x: int) -> str:
    return f"/webgateway/render_image_region/{iid}/0/0/?tile=0,{x},0,256,256"


def report(*paths: Path, **kwargs: Any) -> dict[str, Any]:
    return run_report(list(paths), **kwargs)


def test_truncated_and_non_json_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    good = [json_line(T0 + i, TILE) for i in range(10)]
    lines = [
        *good[:5],
        good[5][:40] + "\n",  # a JSON line cut off
        "Traceback (most recent call last):\n",  # stray text in a JSON log
        "{not json at all}\n",
        nginx_line(T0, tile(1, 0))[:50] + "\n",  # an nginx line cut off
        "\n",
        *good[6:],
    ]
    log = tmp_path / "access.log"
    log.write_text("".join(lines))
    r = report(log)
    src = r["sources"]["idrserve"]
    assert src["requests"] == 9
    assert r["input"]["lines"] == len(lines)
    assert r["input"]["skipped"] == {
        "blank": 1,
        "not_json": 1,
        "truncated": 2,
        "not_a_log_line": 1,
    }


def test_unknown_fields_are_read_and_named(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text(
        json_line(T0, TILE, region="eu", upstream={"x": 1}) + json_line(T0 + 1, TILE) * 2
    )
    r = report(log)
    assert r["sources"]["idrserve"]["requests"] == 3
    assert r["input"]["unknown_fields"] == ["region", "upstream"]
    assert r["input"]["skipped"] == {}


def test_a_log_mixing_both_formats_keeps_them_apart(tmp_path: Path) -> None:
    log = tmp_path / "mixed.log"
    rows = []
    for i in range(30):
        rows.append(nginx_line(T0 + i, tile(7, i % 5), cache="HIT" if i >= 5 else "MISS"))
        if i < 5:
            rows.append(json_line(T0 + i, TILE))
    log.write_text("".join(rows))
    r = report(log)
    assert r["sources"]["nginx"]["requests"] == 30
    assert r["sources"]["idrserve"]["requests"] == 5
    assert r["primary"] == "nginx"
    assert r["sources"]["nginx"]["tiers"]["nginx"]["hit_ratio"] == pytest.approx(25 / 30, 1e-3)


def test_gzip_that_ends_early_is_read_up_to_the_break(tmp_path: Path) -> None:
    lines = [nginx_line(T0 + i, tile(3, i)) for i in range(5000)]
    whole = gzip.compress("".join(lines).encode())
    cut = tmp_path / "access.log.1.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    plain = tmp_path / "access.log"
    plain.write_text(nginx_line(T0 + 9000, tile(3, 0)))
    r = report(cut, plain)
    n = r["sources"]["nginx"]["requests"]
    assert 1 < n < 5001, n
    assert any("ends early" in w and "access.log.1.gz" in w for w in r["input"]["warnings"])
    # A partial last line of the broken stream may be skipped, never more.
    assert r["input"]["lines"] - n <= 1


def test_gzip_members_one_after_another_are_all_read(tmp_path: Path) -> None:
    """`cat access.log.2.gz access.log.1.gz > all.gz` is one valid gzip file of two members."""
    first = gzip.compress("".join(nginx_line(T0 + i, tile(3, i)) for i in range(300)).encode())
    second = gzip.compress("".join(nginx_line(T0 + i, tile(4, i)) for i in range(200)).encode())
    log = tmp_path / "all.log.gz"
    log.write_bytes(first + second)
    r = report(log)
    assert r["sources"]["nginx"]["requests"] == 500
    assert r["input"]["warnings"] == []
    log.write_bytes(first + b"not gzip")
    r = report(log)
    assert r["sources"]["nginx"]["requests"] == 300
    assert any("corrupt" in w for w in r["input"]["warnings"])


def test_timestamps_out_of_order(tmp_path: Path) -> None:
    times = [T0 + 60 * m + s for m in range(10) for s in (1, 7)]
    random.Random(4).shuffle(times)
    log = tmp_path / "a.log"
    log.write_text("".join(nginx_line(t, tile(1, i)) for i, t in enumerate(times)))
    src = report(log)["sources"]["nginx"]
    assert src["first"] == datetime.fromtimestamp(min(times), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert src["last"] == datetime.fromtimestamp(max(times), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    points = src["timeseries"]["points"]
    assert [p["t"] for p in points] == sorted(p["t"] for p in points)
    assert [p["requests"] for p in points] == [2] * 10


def test_empty_log_gives_a_report_that_says_so(tmp_path: Path, capsys: Any) -> None:
    empty = tmp_path / "empty.log"
    empty.write_text("")
    out = tmp_path / "out"
    assert main(["logs", "report", str(empty), "--out", str(out), "--quiet"]) == 0
    doc = json.loads((out / "report.json").read_text())
    assert doc["empty"] is True and doc["sources"] == {} and doc["primary"] is None
    assert "No requests" in (out / "report.html").read_text()
    assert "no requests" in capsys.readouterr().out


def test_missing_log_is_exit_2(tmp_path: Path, capsys: Any) -> None:
    assert main(["logs", "report", str(tmp_path / "nope.log"), "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_rotated_sets_are_read_oldest_first(tmp_path: Path) -> None:
    names = ["access.log", "access.log.1", "access.log.2.gz", "access.log.10.gz", "other.log"]
    for name in names:
        (tmp_path / name).write_text("")
    ordered = [p.name for p in order_logs([tmp_path])]
    oldest_first = ["access.log.10.gz", "access.log.2.gz", "access.log.1", "access.log"]
    assert ordered == [*oldest_first, "other.log"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/webgateway/render_image_region/1/0/0/?tile=0,0,0", "tile"),
        ("/webgateway/render_image_region/{iid}/{z}/{t}/", "tile"),
        ("/webclient/12/render_image_region/1/0/0/", "tile"),
        ("/webgateway/render_image/1/0/0/", "plane"),
        ("/webgateway/render_thumbnail/1/", "thumbnail"),
        ("/webclient/render_thumbnail/{iid}/", "thumbnail"),
        ("/webgateway/get_thumbnails/?id=1", "thumbnail"),
        ("/webgateway/imgData/1/", "imgdata"),
        ("/webclient/{share}/render_image/{iid}/", "plane"),
        ("/iviewer/image_data/{iid}/", "imgdata"),
        ("/webgateway/luts/", "metadata"),
        ("/webclient/imgData/{iid}/", "imgdata"),
        ("/iiif/3/1/full/max/0/default.jpg", "iiif"),
        ("/deepzoom/1_files/9/0_0.jpeg", "deepzoom"),
        ("/zarr/1.zarr/0/.zarray", "zarr"),
        ("/api/v1/images/1/region", "api"),
        ("/viewer/1", "viewer"),
        ("/metrics", "ops"),
        ("/", "other"),
        ("-", "other"),
    ],
)
def test_route_families(path: str, expected: str) -> None:
    assert family(path) == expected


def test_every_server_route_has_a_family() -> None:
    """Each route template of the app lands in a family other than `other`, except `/`."""
    from idrserve.app import create_app
    from idrserve.settings import load_settings

    app = create_app(load_settings({"source": {"zarr_root": "/nonexistent"}}))
    templates = {str(r.resource.canonical) for r in app.router.routes() if r.resource}
    unclassified = sorted(t for t in templates if family(t) == "other")
    assert unclassified == ["/"], unclassified


def test_clients_images_and_keys() -> None:
    assert [client_kind(UA[k]) for k in UA] == list(UA)
    assert client_kind("-") == "other"
    assert image_id("/webgateway/render_thumbnail/123/") == 123
    assert image_id("/zarr/v3/55.zarr/zarr.json") == 55
    assert image_id("/iiif/3/9/info.json") == 9
    assert image_id("/metrics") is None
    assert cache_key("/x/?tile=1&_=99&q=0.9") == "/x/?tile=1&q=0.9"
    assert cache_key("/x/?_=99") == "/x/"
    assert cache_key("/x/?rev=2&tile=1") == "/x/?tile=1"


def _exact_lru(stream: list[tuple[str, int]], capacity: int) -> float:
    cache: OrderedDict[str, int] = OrderedDict()
    used = hits = 0
    for key, size in stream:
        if key in cache:
            hits += 1
            cache.move_to_end(key)
            continue
        cache[key] = size
        used += size
        while used > capacity:
            used -= cache.popitem(last=False)[1]
    return hits / len(stream)


def test_lru_replay_matches_an_exact_lru_and_sampling_stays_close() -> None:
    rng = random.Random(1)
    # A Zipf-like stream over 20 000 keys of 1-10 kB.
    sizes = {f"/t/{k}": rng.randint(1000, 10_000) for k in range(20_000)}
    keys = list(sizes)
    weights = [1 / (i + 1) for i in range(len(keys))]
    stream = [(k, sizes[k]) for k in rng.choices(keys, weights, k=60_000)]
    caps = [2_000_000, 8_000_000, 32_000_000]
    exact = CacheReplay(caps, max_keys=1_000_000)
    sampled = CacheReplay(caps, max_keys=3000)
    for start in range(0, len(stream), 7000):  # as the report feeds it: a block at a time
        block = stream[start : start + 7000]
        keys = pl.Series([k for k, _ in block])
        hashes = np.array([key_hash(k) for k, _ in block], dtype=np.uint32)
        sizes = np.array([size for _, size in block])
        exact.add_batch(keys, hashes, sizes)
        sampled.add_batch(keys, hashes, sizes)
    one = CacheReplay(caps)  # and a request at a time
    for key, size in stream[:500]:
        one.add(key, key_hash(key), size)
    assert one.result()[0]["hit_ratio"] == pytest.approx(_exact_lru(stream[:500], caps[0]))
    assert sampled.rate <= 0.25  # the bound forced sampling
    assert sampled.sampled_keys <= 3000
    for i, cap in enumerate(caps):
        truth = _exact_lru(stream, cap)
        assert exact.result()[i]["hit_ratio"] == pytest.approx(truth, abs=1e-4)
        assert sampled.result()[i]["hit_ratio"] == pytest.approx(truth, abs=0.05)
    assert sampled.distinct_bytes() == pytest.approx(exact.distinct_bytes(), rel=0.15)


def test_distinct_is_exact_then_close() -> None:
    small, large = Distinct(), Distinct()
    for i in range(1000):
        small.add(key_hash(f"k{i}"))
        small.add(key_hash(f"k{i}"))
    assert small.count() == 1000
    n = 200_000
    for i in range(n):
        large.add(key_hash(f"/webgateway/render_image_region/{i}/0/0/?tile=0,0,0"))
    assert large.count() == pytest.approx(n, rel=0.05)


def test_top_table_keeps_heavy_keys_and_states_its_error() -> None:
    top = TopTable(cap=100, columns=("requests",))
    heavy = {f"h{i}": 50 + i for i in range(10)}
    rng = random.Random(2)
    stream = [k for k, n in heavy.items() for _ in range(n)] + [f"l{i}" for i in range(5000)]
    rng.shuffle(stream)
    for start in range(0, len(stream), 250):  # batches, each summed per key
        block = pl.DataFrame({"key": stream[start : start + 250]})
        top.add(block.group_by("key").agg(requests=pl.len()))
    assert top.frame.height <= 100
    assert top.error_bound > 0  # the light keys did not all fit
    got = dict((k, v[0]) for k, v in top.top(10))
    assert set(got) == set(heavy)
    for k, n in heavy.items():
        assert n - top.error_bound <= got[k] <= n


def test_nginx_times_in_any_zone_and_bad_ones() -> None:
    from idrserve.logs.parse import _TimeParser

    parse = _TimeParser()
    for text in (
        "04/Dec/2026:18:43:49 +0000",
        "04/Dec/2026:23:59:59 +0200",
        "05/Dec/2026:00:00:01 +0200",
        "31/Mar/2026:02:30:00 -0500",
    ):
        expected = datetime.strptime(text, "%d/%b/%Y:%H:%M:%S %z").timestamp()
        assert parse(text) == expected, text
    for bad in ("04/Dec/2026:1x:43:49 +0000", "04/Dec/2026:18:43 +0000", "yesterday"):
        with pytest.raises(ValueError, match="not an nginx time"):
            parse(bad)


def test_warm_from_a_report_without_nginx_is_refused(tmp_path: Path, capsys: Any) -> None:
    log = tmp_path / "idrserve.log"
    log.write_text(json_line(T0, TILE) * 3)
    out = tmp_path / "out"
    assert main(["logs", "report", str(log), "--out", str(out), "--quiet"]) == 0
    report = str(out / "report.json")
    args = ["cache", "warm", "--server", "http://127.0.0.1:9", "--from-report", report]
    assert main(args) == 2
    assert "per-image figures need nginx's log" in capsys.readouterr().err
    (tmp_path / "other.json").write_text('{"a": 1}')
    args[-1] = str(tmp_path / "other.json")
    assert main(args) == 2
    assert "not an idrserve logs report" in capsys.readouterr().err


def _exact_quantile(values: list[float], q: float) -> float:
    """The smallest value with at least q of all values at or below it, in ms."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000


def test_columnar_reader_agrees_with_a_plain_count(tmp_path: Path, monkeypatch: Any) -> None:
    """A generated log read by the report (small blocks, so requests cross block edges) and
    counted here line by line: the same requests per family, status, client and cache
    status, and latency percentiles within the histogram's stated 5 %. Lines the column
    reader takes and lines it hands back to the line reader are mixed."""
    from idrserve.logs import columnar

    monkeypatch.setattr(columnar, "BLOCK_BYTES", 4096)
    rng = random.Random(20)
    targets = {
        "tile": lambda i: tile(i, rng.randint(0, 3)),
        "thumbnail": lambda i: f"/webgateway/render_thumbnail/{i}/",
        "imgdata": lambda i: f"/webgateway/imgData/{i}/?_={rng.randint(0, 9)}",
        "iiif": lambda i: f"/iiif/3/{i}/full/max/0/default.jpg",
        "zarr": lambda i: f"/zarr/{i}.zarr/0/0.0",
        "ops": lambda i: "/metrics",
    }
    routes = {"tile": TILE, "thumbnail": "/webgateway/render_thumbnail/{iid}/", "ops": "/readyz"}
    lines: list[str] = []
    want: dict[str, dict[str, Any]] = {
        src: {"family": {}, "status": {}, "client": {}, "edge": {}, "latency": {}}
        for src in ("nginx", "idrserve")
    }

    def count(src: str, table: str, key: Any) -> None:
        want[src][table][key] = want[src][table].get(key, 0) + 1

    for n in range(3000):
        ts = T0 + rng.uniform(0, 7200)  # two hours, out of order
        status = rng.choice([200] * 12 + [404, 503, 504])
        seconds = rng.lognormvariate(-4, 1.2)
        if rng.random() < 0.7:
            fam = rng.choice(list(targets))
            kind = rng.choice(list(UA))
            cache = rng.choice(["HIT", "MISS", "EXPIRED", ""])
            line = nginx_line(
                ts, targets[fam](rng.randint(1, 40)), status, rng.randint(100, 9000),
                seconds, cache, "miss" if cache == "MISS" else "", UA[kind],
            )  # fmt: skip
            if n % 7 == 0:  # an extra field after the deploy format: the line reader's
                line = line.rstrip("\n") + " upstream=10.0.0.2:8080\n"
            lines.append(line)
            count("nginx", "family", fam)
            count("nginx", "client", kind)
            if cache:
                count("nginx", "edge", cache)
            want["nginx"]["latency"].setdefault(fam, []).append(round(seconds, 3))
            src = "nginx"
        else:
            fam = rng.choice(list(routes))
            doc = json_line(ts, routes[fam], status, rng.randint(100, 9000))
            doc = doc.replace('"duration_ms": 12.5', f'"duration_ms": {seconds * 1000:.3f}')
            if n % 5 == 0:  # idrserve's own compact form: the column reader's
                doc = json.dumps(json.loads(doc), separators=(",", ":")) + "\n"
            if n % 11 == 0:  # an escaped character: the line reader's
                doc = doc.replace('"client": "127.0.0.1"', '"client": "a\\"b"')
            lines.append(doc)
            count("idrserve", "family", fam)
            want["idrserve"]["latency"].setdefault(fam, []).append(round(seconds * 1000, 3) / 1000)
            src = "idrserve"
        count(src, "status", str(status))
        if n % 500 == 0:
            lines.append("garbage that is no log line\n")
    log = tmp_path / "access.log"
    log.write_text("".join(lines))
    r = report(log)
    assert r["input"]["lines"] == len(lines)
    assert r["input"]["skipped"] == {"not_a_log_line": 6}
    for src, tables in want.items():
        got = r["sources"][src]
        assert {f: g["requests"] for f, g in got["families"].items()} == tables["family"]
        assert got["status"] == tables["status"]
        for fam, values in tables["latency"].items():
            for q in (0.5, 0.95, 0.99):
                reported = got["families"][fam]["latency_ms"][f"p{round(q * 100)}"]
                assert reported == pytest.approx(_exact_quantile(values, q), rel=0.05)
    nginx = r["sources"]["nginx"]
    assert {k: v["requests"] for k, v in nginx["clients"].items()} == want["nginx"]["client"]
    assert nginx["tiers"]["nginx"]["counts"] == want["nginx"]["edge"]
    assert sum(p["requests"] for p in nginx["timeseries"]["points"]) == nginx["requests"]
