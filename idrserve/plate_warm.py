"""`idrserve cache warm --plate ID`: the URLs a plate browser asks for, to replay cold.

For each plate: the grid of every field index (`/webgateway/plate/{id}/{field}/`), every field's
default thumbnail (what `get_thumbnails` batches and `render_thumbnail` answer from one cache
key), the viewer's thumbnail size and the montage of field 0. They come from the server's own
`/api/v1/plates/{id}`, so ids follow whichever mapping the server uses (docs/plates.md).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import aiohttp

# The thumbnail side the viewer's plate page asks for (docs/plates.md).
VIEWER_THUMBNAIL = 64


async def urls_for_plates(
    session: aiohttp.ClientSession, base: str, plate_ids: Iterable[int]
) -> list[str]:
    urls: list[str] = []
    for pid in plate_ids:
        async with session.get(f"{base}/api/v1/plates/{pid}") as resp:
            if resp.status != 200:
                print(f"warm: plate {pid}: answered {resp.status}", file=sys.stderr)
                continue
            doc = await resp.json()
        ids = [f["image_id"] for w in doc["wells"] for f in w["fields"] if f["image_id"]]
        urls += [f"/webgateway/plate/{pid}/{i}/" for i in range(max(1, doc["field_count"]))]
        urls += [f"/webgateway/render_thumbnail/{i}/" for i in ids]
        urls += [f"/webgateway/render_thumbnail/{i}/{VIEWER_THUMBNAIL}/" for i in ids]
        urls.append(f"/webgateway/plate/{pid}/montage.jpg")
    return urls
