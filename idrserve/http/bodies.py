"""Large response bodies: charged to the process's byte budget and written in pieces.

aiohttp writes a `web.Response` body in one go after the handler has returned: the whole body
lands in the transport's buffer, where it stays until the client reads it, and the admission
slot was already free. 12 clients reading only the head of a 16 MiB `/api/v1` region grew one
worker's RSS by 403 MiB, two copies of each body, while `/readyz` showed nothing in progress
(bench/bench_stalled.py; with 96 MiB regions, 189 MB → 2.59 GB).

Bodies over `LARGE_BODY_BYTES` are therefore written here, by the admission middleware
(`http/ops.py`), while the request still holds its slot:

* the body is charged to `limits.max_inflight_body_bytes` (`Admission.reserve_body`) unless the
  handler reserved it before producing it (`reserve_body`, done by `/api/v1` regions before any
  pixel is read); over the budget, the answer is a 503 `overloaded` with Retry-After;
* it is written in `PIECE_BYTES` pieces, each drained before the next, so the transport never
  holds more than a piece of it;
* the charge and the slot are released when the last piece is taken, or when the client is
  gone: it closed the connection, or took no data for `limits.send_timeout_s` and was
  disconnected (`http/server.py`).

Smaller bodies (tiles, thumbnails, JSON: the viewer traffic) keep aiohttp's one-shot write.
Why 1 MiB: it is above every tile and thumbnail a viewer asks for (a 1024² JPEG tile is
100-500 KiB), so viewer traffic pays only the size check (≈ 0.2 µs, timeit); and what a
stalled client leaves unread of a body that size goes to the kernel's socket buffers (a
1.5 MiB PNG went out whole to a client that read nothing; `tcp_wmem` allows 4 MiB), not to
the process. The send timeout still applies to them.
"""

from __future__ import annotations

from aiohttp import web

from idrserve.admission import Admission
from idrserve.http.keys import BODY_BYTES, BODY_SENT

# Bodies above this are budgeted and written in pieces.
LARGE_BODY_BYTES = 1024 * 1024
# The piece written between two drains: big enough that a piece costs one transport write and
# one wake-up, small enough that a stalled client's buffer holds at most this.
PIECE_BYTES = 256 * 1024


def reserve_body(request: web.Request, admission: Admission | None, nbytes: int) -> None:
    """Charge `nbytes` to this request's body before it is produced (`Overloaded` when over
    the budget); the admission middleware releases it when the request ends."""
    if admission is None:
        return
    held = request.get(BODY_BYTES)
    if held is not None:
        held.release()
    request[BODY_BYTES] = admission.reserve_body(nbytes)


def large_body(request: web.Request, response: web.StreamResponse) -> bytes | None:
    """The body of a response that should be budgeted and written in pieces, else None."""
    if type(response) is not web.Response:
        return None
    body = response.body
    if not isinstance(body, bytes) or len(body) <= LARGE_BODY_BYTES:
        return None  # the common case, decided in ≈ 0.2 µs
    if request.method == "HEAD" or response.prepared or response.compression or response.chunked:
        return None
    return body


async def send_large(
    request: web.Request, response: web.StreamResponse, body: bytes, admission: Admission
) -> web.StreamResponse:
    """Write `response` with `body` in pieces, charged to the budget until written.

    Raises `Overloaded` (nothing sent) when the budget cannot take the body.
    """
    held = request.get(BODY_BYTES)
    if held is None:
        request[BODY_BYTES] = admission.reserve_body(len(body))
    else:
        held.resize(len(body))
    out = web.StreamResponse(status=response.status, reason=response.reason)
    out.headers.extend(response.headers)
    out.content_length = len(body)
    if response.keep_alive is False:
        out.force_close()
    await out.prepare(request)
    view = memoryview(body)
    sent = 0
    try:
        while sent < len(body):
            piece = view[sent : sent + PIECE_BYTES]
            # Waits for the transport to drain below its high-water mark when it is above.
            await out.write(piece)
            sent += len(piece)
            request[BODY_SENT] = sent
        await out.write_eof()
    except ConnectionError:
        # The transport closed under the write (aiohttp cancels the handler when the
        # connection is lost, so this is the rarer way to learn it): aiohttp finishes the
        # response as it does for a client lost during its own writes.
        pass
    return out
