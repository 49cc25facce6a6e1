"""The benchmark harness: `--variant` specs parse to settings (bad ones are refused), and a
second report the same day gets a name of its own."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parents[2] / "bench" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


variants = _load("_variants")


@pytest.fixture
def bench_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/ on sys.path, as when its scripts run: they import each other by module name."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))


def test_labels_map_to_their_settings() -> None:
    parsed = variants.parse_variants(
        [
            "3 per turn:IDRSERVE_SERVER__INLINE_RENDERS_PER_TURN=3",
            "both:IDRSERVE_SERVER__CPU_THREAD_NICE=0,IDRSERVE_SERVER__DIRECT_RENDERS=false",
        ]
    )
    assert parsed == {
        "3 per turn": {"IDRSERVE_SERVER__INLINE_RENDERS_PER_TURN": "3"},
        "both": {
            "IDRSERVE_SERVER__CPU_THREAD_NICE": "0",
            "IDRSERVE_SERVER__DIRECT_RENDERS": "false",
        },
    }


@pytest.mark.parametrize(
    "spec",
    ["no label", ":IDRSERVE_X=1", "x:", "x:PATH=/tmp", "x:IDRSERVE_X", "x:IDRSERVE_X=1,HOME=/"],
)
def test_malformed_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="expected LABEL:IDRSERVE_VAR=VALUE"):
        variants.parse_variants([spec])


def test_settings_for_every_server_parse_and_bad_ones_are_refused() -> None:
    assert variants.parse_settings(
        ["IDRSERVE_SERVER__INLINE_RENDER_PIXELS=0", "IDRSERVE_X=a=b"]
    ) == {"IDRSERVE_SERVER__INLINE_RENDER_PIXELS": "0", "IDRSERVE_X": "a=b"}
    for bad in ("PATH=/tmp", "IDRSERVE_X", "=1"):
        with pytest.raises(ValueError, match="expected IDRSERVE_VAR=VALUE"):
            variants.parse_settings([bad])


def test_a_second_report_the_same_day_does_not_overwrite_the_first(tmp_path: Path) -> None:
    unused = _load("_results").unused
    first = tmp_path / "http-vm-2026-12-05.md"
    assert unused(first) == first
    first.write_text("committed")

    def sibling(letter: str) -> Path:
        return first.with_name(f"{first.stem}-{letter}{first.suffix}")

    second = unused(first)
    assert second == sibling("b")
    second.write_text("x")
    assert unused(first) == sibling("c")
    assert first.read_text() == "committed"


def _responses(conn: Any, count: int) -> list[tuple[bytes, bytes]]:
    """`count` HTTP/1.1 responses (status line, body) read off `conn` by Content-Length."""
    data = b""
    out = []
    while len(out) < count:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            head = data[:end].decode("latin-1")
            length = next(
                int(line.split(":", 1)[1])
                for line in head.split("\r\n")
                if line.lower().startswith("content-length:")
            )
            if len(data) >= end + 4 + length:
                out.append((head.split("\r\n")[0].encode(), data[end + 4 : end + 4 + length]))
                data = data[end + 4 + length :]
                continue
        more = conn.recv(65536)
        assert more, "connection closed early"
        data += more
    return out


def _connect(port: int, proc: Any) -> Any:
    """A connection to a bench/_floor.py just started, once it listens (planning and the
    kernels' warm-up come first with `--kernel`); fails at once if it died."""
    import socket
    import time

    for _ in range(600):
        if proc.poll() is not None:
            raise AssertionError(f"bench/_floor.py exited with {proc.returncode}")
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            time.sleep(0.05)
    raise AssertionError("bench/_floor.py did not listen")


@pytest.mark.parametrize("mode", [[], ["--aiohttp"]], ids=["bare", "aiohttp"])
def test_the_floor_servers_answer_each_pipelined_request(mode: list[str]) -> None:
    """bench/_floor.py, the two floors `bench_http.py --floor` measures: one whole response
    per request head, even when heads arrive together or split."""
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = Path(__file__).resolve().parents[2] / "bench" / "_floor.py"
    proc = subprocess.Popen([sys.executable, str(script), str(port), *mode])
    try:
        with _connect(port, proc) as conn:
            conn.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHo")
            conn.sendall(b"st: x\r\n\r\n")
            answers = _responses(conn, 2)
        body = _load("_floor").BODY
        assert answers == [(b"HTTP/1.1 200 OK", body)] * 2
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("turns", [[], ["--turns"]], ids=["at-once", "turns"])
def test_the_kernel_floor_answers_each_tile_with_the_kernels_bytes(
    tmp_path: Path, bench_imports: None, turns: list[str]
) -> None:
    """`_floor.py --kernel`, the ceiling `bench_http.py --floor` sets beside idrserve: each
    tile URL answered with the bytes bench/_kernel.py makes for it (the work is done, not
    skipped), heads arriving together or split; anything else the constant body. With
    `--turns` the second tile waits for a later loop iteration (idrserve's turns), and the
    request pipelined behind it is answered after it, not before; a 512² tile takes two
    turns."""
    import hashlib
    import json
    import socket
    import subprocess
    import sys

    from bench_http import write_image

    write_image(tmp_path / "data" / "2001.zarr", 256, 1, size=512)
    urls = [f"/webgateway/render_image_region/2001/0/0/?tile=0,{x},1,256,256" for x in (0, 1)]
    urls.append("/webgateway/render_image_region/2001/0/0/?tile=0,0,0,512,512")
    url_file = tmp_path / "urls.txt"
    url_file.write_text("\n".join(urls) + "\n")
    bench = Path(__file__).resolve().parents[2] / "bench"
    kernel = subprocess.run(
        [sys.executable, str(bench / "_kernel.py"), str(tmp_path / "data"), str(url_file), "0"],
        capture_output=True,
        check=True,
    )
    digests = json.loads(kernel.stdout)["sha256"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, str(bench / "_floor.py"), str(port), "--kernel"]
    proc = subprocess.Popen([*cmd, str(tmp_path / "data"), str(url_file), *turns])
    try:
        with _connect(port, proc) as conn:
            heads = b"".join(f"GET {u} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for u in urls)
            conn.sendall(heads + b"GET /healthz HTTP/1.1\r\nHo")
            conn.sendall(b"st: x\r\n\r\n")
            answers = _responses(conn, 4)
        assert [status for status, _ in answers] == [b"HTTP/1.1 200 OK"] * 4
        assert [hashlib.sha256(body).hexdigest() for _, body in answers[:3]] == [
            digests[u] for u in urls
        ]
        assert answers[0][1] != answers[1][1]
        assert answers[3][1] == _load("_floor").BODY
        with _connect(port, proc) as conn:  # the kernel's stages, as idrserve's /metrics
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            metrics = _responses(conn, 1)[0][1].decode()
        from bench_http import lag_buckets, render_stages, stages_us

        spent = render_stages(f"http://127.0.0.1:{port}")
        assert spent is not None and spent["renders"] == 3, metrics
        # The loop's lag, sampled by idrserve's own sampler, read as bench_http reads it.
        assert lag_buckets(f"http://127.0.0.1:{port}"), metrics
        if turns:
            waits = re.search(r"^floor_turn_waits_total (\d+)", metrics, re.MULTILINE)
            assert waits is not None and int(waits.group(1)) >= 2, metrics
        assert set(stages_us({}, spent)) == {"source_us", "render_us", "encode_us"}
        assert all(v > 0 for v in stages_us({}, spent).values())
    finally:
        proc.terminate()
        proc.wait(10)


profile_cold = _load("profile_cold")


def test_a_profiles_samples_are_split_into_the_kernels_stages_first() -> None:
    # py-spy's raw format: frames from the outermost, `;`-separated, then the sample count.
    loop = "serve (idrserve/http/server.py:10)"
    received = f"{loop};JsonErrorRequestHandler.data_received (idrserve/http/server.py:20)"
    kernel = f"{received};_read_render_encode (idrserve/service.py:30)"
    lines = [
        f"{kernel};encode_jpeg (idrserve/encode/jpeg.py:40) 6\n",
        f"{kernel};DirectV2Array.read (x.py:1);DirectV2Array._put (x.py:2) 2\n",
        f"{received};ColdRenders.plan (idrserve/http/coldpath.py:50) 1\n",
        f"{loop} 1\n",
        "not a sample line\n",
    ]
    stage_shares, samples = profile_cold.shares(lines)
    assert samples == 10
    assert stage_shares == {
        "JPEG encode (simplejpeg)": 0.6,
        "Blosc decode": 0.2,
        "parsing and planning the request": 0.1,
        profile_cold.OTHER: 0.1,
    }


def test_a_redis_tiers_work_is_its_own_stage_and_its_flights_another() -> None:
    """`profile_cold.py --redis`: the tier's commands and replies, then the single flight and
    lookups that wrap a render, each apart from the loop's other work; the kernel still
    counts as the kernel inside them."""
    loop = "serve (idrserve/http/server.py:10)"
    flight = f"{loop};SingleFlight.run (idrserve/flight.py:50)"
    lines = [
        f"{flight};RedisTier._call (idrserve/cache/redis.py:155) 3\n",
        f"{loop};Multiplexed._read (idrserve/cache/redis_mux.py:92) 1\n",
        f"{flight} 2\n",
        f"{flight};_read_render_encode (idrserve/service.py:30);encode_jpeg (j.py:4) 4\n",
    ]
    stage_shares, _ = profile_cold.shares(lines)
    assert stage_shares == {
        "JPEG encode (simplejpeg)": 0.4,
        "the Redis tier: commands, replies, the write queue": 0.4,
        "single flight, cache lookups around them": 0.2,
    }


@pytest.mark.usefixtures("bench_imports")
def test_the_kernels_time_in_the_server_is_its_stage_seconds_over_its_renders() -> None:
    bench_http = _load("bench_http")
    before = {"source": 1.0, "render": 0.5, "encode": 0.2, "renders": 100.0}
    after = {"source": 1.3, "render": 0.6, "encode": 0.4, "renders": 300.0}
    assert bench_http.stages_us(before, after) == pytest.approx(
        {"source_us": 1500.0, "render_us": 500.0, "encode_us": 1000.0}
    )
    assert bench_http.stages_us(None, after) == {}  # a server without the metric
    # A fresh server (bench_iiif.py's cold contender) has the metric but no stage yet.
    assert bench_http.stages_us({"renders": 0.0}, after)["source_us"] == pytest.approx(
        1.3 / 300 * 1e6
    )
    assert bench_http.stages_us(after, after) == {}  # no render in between


@pytest.mark.usefixtures("bench_imports")
def test_the_loops_cpu_a_tile_is_its_seconds_over_the_requests() -> None:
    bench_http = _load("bench_http")
    before = {"loop": 2.0, "cpu_pool": 10.0}
    after = {"loop": 2.5, "cpu_pool": 18.0}
    assert bench_http.thread_cpu_us(before, after, 1000) == pytest.approx(
        {"loop_cpu_us": 500.0, "cpu_pool_cpu_us": 8000.0}
    )
    assert bench_http.thread_cpu_us(None, after, 1000) == {}  # a server without the metric
    assert bench_http.thread_cpu_us(before, after, 0) == {}
    text = (
        'idrserve_thread_cpu_seconds_total{pid="41",thread="loop"} 1.5\n'
        'idrserve_thread_cpu_seconds_total{pid="41",thread="cpu_pool"} 3e-05\n'
    )
    found = {m.group(1): float(m.group(2)) for m in bench_http.THREAD_CPU.finditer(text)}
    assert found == {"loop": 1.5, "cpu_pool": 3e-05}


KERNEL_URLS = [
    "/webgateway/render_image_region/2001/0/0/?tile=0,1,2,256,256",
    "/iiif/3/2001;q=0.9/256,512,256,256/256,256/0/default.jpg",
    "/iiif/3/2001;q=0.9/512,0,512,512/256,256/0/default.jpg",  # from the stored level 1
]


@pytest.fixture
def kernel_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """bench/_kernel.py's JSON line for KERNEL_URLS over bench_http.py's image, at 1024²."""
    import json
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[2] / "bench"
    monkeypatch.syspath_prepend(str(bench))
    _load("bench_http").write_image(tmp_path / "2001.zarr", 256, 1, 1024)
    (tmp_path / "urls.txt").write_text("\n".join(KERNEL_URLS))
    cmd = [sys.executable, str(bench / "_kernel.py"), str(tmp_path), str(tmp_path / "urls.txt")]
    out = subprocess.run([*cmd, "0.2"], capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out), root=tmp_path)


async def test_the_kernel_makes_the_servers_bytes_for_webgateway_and_iiif_urls(
    aiohttp_client: Any, kernel_run: dict[str, Any]
) -> None:
    """bench/_kernel.py plans both URL forms as the server does (bench_http.py and
    bench_iiif.py compare the two sides' rates, which means nothing if they did other work)."""
    import hashlib

    from idrserve.app import create_app
    from idrserve.settings import load_settings

    assert kernel_run["rps"] > 0
    assert set(kernel_run["stages_us"]) == {"source", "render", "encode"}
    settings = load_settings({"source": {"zarr_root": str(kernel_run["root"])}})
    client = await aiohttp_client(create_app(settings))
    for url in KERNEL_URLS:
        resp = await client.get(url)
        assert resp.status == 200, url
        assert hashlib.sha256(await resp.read()).hexdigest() == kernel_run["sha256"][url], url


@pytest.mark.usefixtures("bench_imports")
def test_a_iiif_tiles_time_is_split_and_its_ceiling_set_against_the_peer() -> None:
    bench_iiif = _load("bench_iiif")
    stages = {"source_us": 300.0, "render_us": 70.0, "encode_us": 200.0}
    cold = [{"rps": 1250.0, **stages}] * 3  # 800 µs a tile, 570 of them in the kernel
    alone = [{"rps": 1800.0, "source_us": 280.0, "render_us": 60.0, "encode_us": 190.0}] * 3
    peer = [{"rps": 1200.0}] * 3
    text = "\n".join(bench_iiif.kernel_rows(cold, alone, peer))
    assert "| 800 | 300 (280) | 70 (60) | 200 (190) | 570 | 530 | +40 | 230 |" in text
    assert "1.50×" in text  # 1800 / 1200: the most the server could reach against the peer
    assert bench_iiif.kernel_rows([{"rps": 1.0}], alone, peer) == []  # a server without stages


@pytest.mark.usefixtures("bench_imports")
def test_the_kernel_floor_is_set_against_the_peer_and_the_cold_server() -> None:
    """`bench_iiif.py --floor`: each bare responder + kernel (rendering at once, and taking
    idrserve's turns) gets two informative rows, its rate against iipsrv's best case and the
    cold server's against it; without the flag, none."""
    bench_iiif = _load("bench_iiif")
    row = {"p99_ms": 10.0}
    results = {
        name: [{"rps": rps, **row}]
        for name, rps in (
            (bench_iiif.COLD, 900.0),
            (bench_iiif.WARM, 30000.0),
            (bench_iiif.IIP_RAW, 600.0),
            (bench_iiif.IIP_JPEG, 1000.0),
            (bench_iiif.FLOOR, 1200.0),
            (bench_iiif.FLOOR_TURNS, 1125.0),
        )
    }
    text = "\n".join(bench_iiif.ratio_rows(results, [], floor=True))
    assert f"| {bench_iiif.FLOOR} / {bench_iiif.IIP_JPEG} | 1.20 |" in text
    assert f"| {bench_iiif.COLD} / {bench_iiif.FLOOR} | 0.75 |" in text
    assert f"| {bench_iiif.FLOOR_TURNS} / {bench_iiif.IIP_JPEG} | 1.12 |" in text
    assert f"| {bench_iiif.COLD} / {bench_iiif.FLOOR_TURNS} | 0.80 |" in text
    without = "\n".join(bench_iiif.ratio_rows(results, []))
    assert bench_iiif.FLOOR not in without and bench_iiif.FLOOR_TURNS not in without


@pytest.mark.usefixtures("bench_imports")
def test_a_lag_p99_just_over_the_target_reads_as_the_next_fine_bucket() -> None:
    """2.1 ms read as 5 ms when the histogram had no bucket between 2 and 5 ms."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from idrserve.http.looplag import BUCKETS

    http = _load("bench_http")
    registry = CollectorRegistry()
    hist = Histogram("lag_seconds", "", buckets=BUCKETS, registry=registry)
    for _ in range(95):
        hist.observe(0.0004)
    for _ in range(5):
        hist.observe(0.0021)
    buckets = {
        float(line.split('le="')[1].split('"')[0]): float(line.split()[-1])
        for line in generate_latest(registry).decode().splitlines()
        if line.startswith("lag_seconds_bucket")
    }
    before = dict.fromkeys(buckets, 0.0)
    assert http.lag_p99_ms(before, buckets) == pytest.approx(2.5)
    assert http.lag_share(before, buckets, 0.002) == pytest.approx(0.95)


def test_the_request_path_stub_replaces_both_render_paths() -> None:
    # bench/_request_path.py must stub the kernel on the plain path and on the two-turn one
    # (tiles over service.ONE_TURN_PIXELS), or its "request path alone" renders for real. It
    # patches idrserve.service on import: run it in a process of its own.
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[2] / "bench"
    code = f"""
import sys
from types import SimpleNamespace
sys.path.insert(0, {str(bench)!r})
import _request_path as rp
import idrserve.service as service
from idrserve.model import Format

def read():
    raise AssertionError("the stub read chunks")

req = SimpleNamespace(fmt=Format.JPEG)
deps = SimpleNamespace(inline_turns=SimpleNamespace(record=lambda seconds: None))
plain = service._read_render_encode(req, None, deps, read, "k")
rest = service._read_first(req, None, deps, read, "k")
assert plain.body == rest().body == rp.BODY
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_another_revisions_nginx_configuration_is_copied_whole(tmp_path: Path) -> None:
    """bench_nginx_hits.py `--baseline-rev`: both files of deploy/nginx as committed at that
    revision, ready for `Stack.deploy_nginx(..., source=)`, which renders them as it renders
    the shipped ones (the literals it replaces must be there)."""
    hits = _load("bench_nginx_hits")
    harness = _load("_harness")
    copy = hits.revision_copy("HEAD", tmp_path / "conf")
    conf = (copy / "idrserve.conf").read_text()
    assert "proxy_cache_key" in conf and "listen 80;" in conf
    assert "events" in (copy / "nginx.conf").read_text()
    cmd = harness.render_deploy_nginx(tmp_path / "prefix", 1, 2, 3, copy)
    rendered = (tmp_path / "prefix" / "idrserve.conf").read_text()
    assert "listen 127.0.0.1:1;" in rendered and "127.0.0.1:2" in rendered
    assert "/var/log/" not in rendered  # the access log stays under the prefix
    assert cmd[cmd.index("-c") + 1] == str(tmp_path / "prefix" / "nginx.conf")
    assert hits.median_ratio([2.0, 3.0, 9.0], [1.0, 3.0, 3.0]) == 2.0


@pytest.mark.usefixtures("bench_imports")
def test_the_clients_cpu_share_counts_a_busy_child_and_not_a_sleeping_one() -> None:
    """run_wrk's `client_cpu`: a reaped child's CPU over its wall time, as wrk's is taken."""
    import resource
    import subprocess
    import sys
    import time

    http = _load("bench_http")

    def share(code: str) -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return float(http.client_cpu_share(before, after, time.perf_counter() - t0))

    busy = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass"
    assert share(busy) > 0.5  # a core's worth, less the interpreter's start
    assert share("import time; time.sleep(0.4)") < 0.3
    assert http.client_cpu_share(before := resource.getrusage(resource.RUSAGE_SELF), before, 0) == 0
    rounds = [{"client_cpu": 0.5}, {"client_cpu": 0.98}, {"client_cpu": 0.7}]
    assert http.client_cpu_cell(rounds) == "0.70"
    assert http.client_cpu_cell([{"rps": 1.0, "failures": 0.0}]) == "–"  # locust's rounds


@pytest.mark.usefixtures("bench_imports")
def test_the_deploy_tables_show_wrks_cpu_for_wrk_rounds_only() -> None:
    deploy = _load("bench_deploy")
    common = {"rps": 100.0, "p50_ms": 1.0, "p99_ms": 2.0, "bytes_per_req": 30.0}
    wrk = deploy.table({"nginx static": [common | {"client_cpu": 0.97}]}, "wrk")
    locust = deploy.table({"viewer": [common | {"failures": 0.0}]}, "locust sessions")
    assert "wrk CPU" in wrk[0] and "| 0.97 |" in wrk[2] and wrk[-1].startswith("wrk CPU:")
    assert "wrk CPU" not in "\n".join(locust)
    for lines in (wrk[:3], locust):  # every row has the header's number of cells
        assert len({line.count("|") for line in lines}) == 1, lines


@pytest.mark.usefixtures("bench_imports")
def test_the_busy_share_counts_every_state_but_idle_and_iowait() -> None:
    """bench_iiif.py's busy flag: /proc/stat's aggregate line, idle and iowait apart."""
    harness = _load("_harness")
    # cpu user nice system idle iowait irq softirq steal (guest fields after: ignored)
    before = harness.cpu_times("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    assert before == (150, 1000)
    after = harness.cpu_times("cpu  300 10 90 1300 70 5 5 20 0 0\n")
    assert after == (430, 1800)
    assert harness.busy_share(before, after) == pytest.approx(280 / 800)
    assert harness.busy_share(after, after) == 0.0


@pytest.mark.usefixtures("bench_imports")
def test_a_spinning_process_reads_as_busy() -> None:
    """The live reading: one core kept busy by a child counts for at least most of its share
    of the machine (1 / nproc), whatever else runs."""
    import os
    import subprocess
    import sys

    harness = _load("_harness")
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        share = harness.busy_now(1.0)
    finally:
        spin.kill()
        spin.wait(10)
    assert share >= 0.7 / (os.cpu_count() or 1)


@pytest.mark.usefixtures("bench_imports")
def test_browser_heads_are_read_by_idrserve_as_aiohttp_reads_them() -> None:
    """`--browser-heads` measures the path a browser's tiles take: its head is a plain GET that
    http/plainhead.py reads, with the fields aiohttp's parser gives."""
    from bench_http import BROWSER_HEADS

    from idrserve.http.plainhead import PlainGet
    from tests.http.test_plainhead import check

    head = "GET /webgateway/render_image_region/2001/0/0/?tile=0,1,2,256,256 HTTP/1.1\r\n"
    head += "Host: 127.0.0.1:8080\r\n" + "".join(f"{h}\r\n" for h in BROWSER_HEADS) + "\r\n"
    own = check(head.encode())
    assert isinstance(own, PlainGet)
    assert len(own.headers) == len(BROWSER_HEADS) + 1


@pytest.mark.usefixtures("bench_imports")
def test_every_server_start_gets_an_environment_of_its_own_size() -> None:
    """A/B rounds must not lean with the checkouts' paths: each start adds a variable of a
    new length (up to 4 KiB) and leaves the rest of the environment as it was."""
    from bench_http import LAYOUT_PAD, padded

    env = {"PATH": "/usr/bin", "IDRSERVE_SERVER__CPU_THREADS": "1"}
    starts = [padded(env) for _ in range(64)]
    assert all({k: v for k, v in s.items() if k != LAYOUT_PAD} == env for s in starts)
    assert all(set(s[LAYOUT_PAD]) <= {"x"} and len(s[LAYOUT_PAD]) <= 4096 for s in starts)
    assert len({len(s[LAYOUT_PAD]) for s in starts}) > 32  # new each start, not fixed
    assert LAYOUT_PAD not in env


@pytest.mark.usefixtures("bench_imports")
def test_the_kernels_slowdown_by_memory_touched_is_a_median_of_per_round_differences() -> None:
    """bench_kernel_cache.py sets each size against none round by round, so that the host's
    speed changing between rounds does not read as the caches' effect."""
    from bench_kernel_cache import report

    def tile(kernel: float) -> dict[str, float]:
        return {"source": kernel / 2, "render": kernel / 4, "encode": kernel / 4, "kernel": kernel}

    results = {
        0: [tile(600), tile(700), tile(650)],
        1024: [tile(660), tile(750), tile(760)],  # +60, +50, +110: the median is +60
    }
    text = report(results, "cmd", "2026-12-08", "vm")
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert rows["| 0"].endswith("| 650 | – |")
    assert rows["| 1024"].endswith("| 750 | +60 µs |")  # not 750 - 650 = +100 from the medians


@pytest.mark.usefixtures("bench_imports")
def test_an_ab_run_starts_its_servers_anew_every_round() -> None:
    """A layout drawn once would lean a whole A/B run one way; --baseline implies --fresh."""
    from bench_http import build_parser, fresh_rounds

    parser = build_parser()
    assert fresh_rounds(parser.parse_args(["--baseline", "/tmp/other"]))
    assert fresh_rounds(parser.parse_args(["--fresh"]))
    assert not fresh_rounds(parser.parse_args([]))
