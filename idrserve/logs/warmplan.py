"""What `idrserve cache warm --from-report/--from-log` asks for, from a usage report.

The hottest images first, ranked by requests from anything but crawlers (a crawler walks
every image once: its requests say nothing about what visitors will ask again). For each:
its thumbnail, bird's-eye view and imgData (what every viewer opens first), then the URLs
of that image that were requested at least twice by non-crawler clients, most requested
first. The report keeps those URLs in `sources.nginx.warm.urls`.
"""

from __future__ import annotations

from typing import Any


class NoPlan(ValueError):
    """The report cannot drive warming (no nginx log in it, or no requests)."""


def warm_urls(report: dict[str, Any], top: int) -> list[str]:
    """URLs (path and query) to GET, in order, for the `top` hottest images."""
    nginx = report.get("sources", {}).get("nginx")
    if not nginx:
        raise NoPlan(
            "the report has no nginx log in it: per-image figures need nginx's log "
            "(idrserve's own log names route templates, not images)"
        )
    images = nginx["top_images"]["by_requests"]
    ranked = sorted(
        (r for r in images if r["requests"] > r.get("crawler_requests", 0)),
        key=lambda r: (-(r["requests"] - r.get("crawler_requests", 0)), r["image"]),
    )[:top]
    repeated: dict[int, list[str]] = {}
    for row in nginx["warm"]["urls"]:
        if row["image"] is not None and row["requests"] >= 2:
            repeated.setdefault(row["image"], []).append(row["url"])
    urls: list[str] = []
    for row in ranked:
        iid = row["image"]
        first = [
            f"/webgateway/render_thumbnail/{iid}/",
            f"/webgateway/render_birds_eye_view/{iid}/",
            f"/webgateway/imgData/{iid}/",
        ]
        urls += first + [u for u in repeated.get(iid, []) if u not in first]
    return list(dict.fromkeys(urls))
