"""Locust sessions over a fixed URL list, so every contender of a side-by-side run (static nginx,
IIPImage, idrserve) gets the same requests in the same session shape.

A session is what a viewer does after a zoom or a pan: a run of neighbouring tiles (consecutive
URLs of the list, which the harnesses write in row-major tile order), fetched one after another on
one connection with no think time. The list and the run length come from the environment so one
file serves every contender:

    IDRSERVE_BENCH_URLS=/tmp/urls.txt IDRSERVE_BENCH_RUN=16 \\
        locust -f bench/locust_urls.py --headless -u 32 -t 10s --host http://127.0.0.1:8080
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from locust import FastHttpUser, constant, task

URLS = [u for u in Path(os.environ["IDRSERVE_BENCH_URLS"]).read_text().splitlines() if u]
RUN = int(os.environ.get("IDRSERVE_BENCH_RUN", "16"))


class TileSession(FastHttpUser):
    """One simulated viewer: a run of neighbouring tiles from a random starting tile."""

    wait_time = constant(0)  # back to back: the harness measures capacity, not think time

    @task
    def session(self) -> None:
        start = random.randrange(len(URLS))
        for i in range(RUN):
            url = URLS[(start + i) % len(URLS)]
            with self.client.get(url, name="tile", catch_response=True) as resp:
                if resp.status_code != 200 or not resp.content:
                    resp.failure(f"{resp.status_code} for {url}")
