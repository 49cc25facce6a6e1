"""Request heads read by idrserve (http/plainhead.py) against aiohttp's own parser: a head read
as a plain GET gives the fields aiohttp gives, one left to aiohttp leaves its parser at a
message boundary when `read_head` says so, and nothing aiohttp refuses is read here."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpRequestParser

from idrserve.http.fastpath import plain_get
from idrserve.http.plainhead import PlainGet, read_head, request_id_field

TILE = "/webgateway/render_image_region/2001/0/0/?tile=0,1,2,256,256"
VIEWER = (
    "/webgateway/render_image_region/1/0/0/?tile=2,3,4,512,512&c=1|100:3000$FF0000,"
    "-2|0:4000$00FF00&m=c&p=normal&ia=0&q=0.9&maps=%5B%7B%22inverted%22%3A%7B%7D%7D%5D&_=17"
)


class _Protocol:
    """What aiohttp's parser asks of its protocol for bodiless requests: nothing."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the parser asked for {name}")


def aiohttp_reads(data: bytes) -> tuple[list[Any], bool]:
    """aiohttp's messages for `data`, and whether its parser is then at a message boundary
    (a plain head fed after them comes out whole)."""
    loop = asyncio.new_event_loop()
    try:
        parser = HttpRequestParser(
            _Protocol(), loop, 2**16, max_line_size=8190, max_field_size=8190, max_headers=128
        )
        try:
            messages, upgraded, tail = parser.feed_data(data)
        except HttpProcessingError:
            return [], False
        after = b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n"
        try:
            more, _, _ = parser.feed_data(after)
        except HttpProcessingError:
            more = []
        closing = len(messages) == 1 and messages[0][0].should_close
        # After a closing request aiohttp reads nothing more: the connection ends with it.
        clean = not upgraded and not tail and (closing or [m.path for m, _ in more] == ["/after"])
        return [m for m, _ in messages], clean
    finally:
        loop.close()


def check(data: bytes) -> Any:
    """Assert what `read_head` makes of `data` against aiohttp; return it."""
    own = read_head(data)
    messages, clean = aiohttp_reads(data)
    if own is False:
        return own
    assert clean and len(messages) == 1, (data, messages)
    if isinstance(own, PlainGet):
        theirs = messages[0]
        assert own.path == theirs.path
        assert own.url.raw_path == theirs.url.raw_path
        assert list(own.url.query.items()) == list(theirs.url.query.items())
        # aiohttp names the fields it knows its own way (`X-Request-ID`); both are
        # case-insensitive, and nothing reads the names' case.
        assert [(k.lower(), v) for k, v in own.headers.items()] == [
            (k.lower(), v) for k, v in theirs.headers.items()
        ]
        for name in ("method", "version", "should_close", "upgrade", "chunked"):
            assert getattr(own, name) == getattr(theirs, name), name
        # What the direct and cold paths read without making `headers`.
        assert request_id_field(own) == request_id_field(theirs)
        assert request_id_field(theirs) == theirs.headers.get("X-Request-ID")
        assert plain_get(own) and plain_get(theirs)
        message, _payload = own.parsed(_Protocol(), None)
        assert message.path == theirs.path and message.headers == theirs.headers
    return own


@pytest.mark.parametrize(
    "head",
    [
        f"GET {TILE} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
        f"GET {VIEWER} HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nX-Request-ID: ab-1\r\n"
        "Accept: image/avif,image/webp,*/*\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n\r\n",
        "GET /iiif/3/2001/0,0,256,256/256,/0/default.jpg HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /iiif/2/2001/pct:0,0,50,50/!256,256/0/default.jpg HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /a?x=1&x=2&&y&=v&z=a=b;c HTTP/1.1\r\nhost:x\r\nX-Request-ID:  spaced \t\r\n\r\n",
        "GET /a?q=%7C+b%zz HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: \r\n\r\n",
        "GET /a HTTP/1.1\r\nx-request-id: first\r\nHost: x\r\nX-Request-Id: second\r\n\r\n",
    ],
)
def test_plain_gets_read_as_aiohttp_reads_them(head: str) -> None:
    assert isinstance(check(head.encode()), PlainGet)


@pytest.mark.parametrize(
    "head",
    [
        f"HEAD {TILE} HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET {TILE} HTTP/1.0\r\nHost: x\r\n\r\n",
        f"GET {TILE} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        f'GET {TILE} HTTP/1.1\r\nHost: x\r\nIf-None-Match: "abc"\r\n\r\n',
        "OPTIONS /iiif/3/1/info.json HTTP/1.1\r\nHost: x\r\nOrigin: https://a.org\r\n\r\n",
        "GET /a/../b HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET //a HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /a HTTP/1.0\r\n\r\n",
    ],
)
def test_whole_heads_that_are_not_plain_are_aiohttps_and_keep_it_at_a_boundary(
    head: str,
) -> None:
    assert check(head.encode()) is True


@pytest.mark.parametrize(
    "head",
    [
        f"GET {TILE} HTTP/1.1\r\nHost: x\r\n",  # not whole
        f"GET {TILE} HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n",  # two heads
        f"GET {TILE} HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        f"GET {TILE} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET /chat HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        f"GET {TILE} HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",  # aiohttp: 400
        f"GET {TILE} HTTP/1.1\r\nHost : x\r\n\r\n",  # aiohttp: 400
        "GET /a HTTP/1.1\r\nAccept: */*\r\n\r\n",  # no Host: aiohttp answers 400
        "GET /a#frag HTTP/1.1\r\n\r\n",
        "GET /a?b=<c> HTTP/1.1\r\n\r\n",
        "GET /a HTTP/1.1\r\nX: caf\xe9\r\n\r\n",
        "POST /a HTTP/1.1\r\n\r\n",
        "GET /" + "a" * 8200 + " HTTP/1.1\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: x\r\n" + "X-A: b\r\n" * 64 + "\r\n",
        "GET /a HTTP/1.1\r\nHost: x\r\n" + "X-A: b\r\n" * 3000 + "X\r\n\r\n",
    ],
)
def test_anything_else_is_left_to_aiohttp(head: str) -> None:
    assert read_head(head.encode("latin-1")) is False


def test_random_heads_read_here_are_read_as_aiohttp_reads_them() -> None:
    """Heads built from the characters that matter (separators, escapes, case, spaces): every
    one `read_head` takes is checked against aiohttp; most are taken."""
    rng = random.Random(19)
    chars = "aZ09-._~!$&'()*+,;=:@/?%|" * 8 + '<> #"\\'
    names = ["X-Request-ID", "x-request-id", "Accept", "Connection", "If-None-Match", "Host"]
    values = ["keep-alive", "close", "a b", " x ", "ab-12", '"e"', "", "\t1"]
    taken = 0
    for _ in range(1500):
        target = "/" + "".join(rng.choice(chars) for _ in range(rng.randint(0, 30)))
        fields = "Host: x\r\n" * rng.choice((0, 1, 1, 1, 1, 1)) + "".join(
            f"{rng.choice(names)}:{rng.choice(values)}\r\n" for _ in range(rng.randint(0, 3))
        )
        own = check(f"GET {target} HTTP/1.1\r\n{fields}\r\n".encode("latin-1"))
        taken += isinstance(own, PlainGet)
    assert taken > 300
