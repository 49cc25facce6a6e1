"""Plain GET request heads read without aiohttp's parser, for the direct hits and cold tiles
the connection handler answers itself (http/server.py).

Why: aiohttp's parser (llhttp in C) is fast alone (about 2 µs a head, timed by itself), but for
each request it also builds a `RawRequestMessage`, a yarl URL, a case-insensitive multidict of
headers and the query's multidict, touching four C extensions' code and data. Between two
renders, whose chunks, planes and output evict the core's caches, that cost about 40 µs a
256² tile on the reference machine: the bare responder with the kernel and idrserve's turns
made 0.93–0.95× its tiles/s once it also fed each request to aiohttp's parser and read the URL,
query and headers it gives, against 0.98× reading the same fields from one regular
expression's match (docs/benchmarks.md#request-heads-read-by-idrserve-2026-12-07).

What is read here is a strict subset of HTTP/1.1, exactly one whole head per read: the request
line, at most 64 header fields of printable ASCII, nothing else, at most 8 190 bytes. For those
the fields below equal aiohttp's to the byte (tests/http/test_plainhead.py compares them with
aiohttp's own parser on a corpus and on random heads). A head that would leave aiohttp's parser
in the middle of a message (a body, an upgrade, a partial or second head, anything the strict
grammar does not cover) is left to aiohttp, and so is everything after it on that connection:
aiohttp's parser is only ever fed whole bodiless heads while a connection's heads are read
here, so it stays at a message boundary and can take over at any request.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import HttpVersion11, http_parser
from aiohttp.http_parser import HttpRequestParser, RawRequestMessage
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from yarl import URL

from idrserve.http.middleware import TOKEN

# aiohttp ≥ 3.14 refuses a second one of these (a 400); older ones have no such check.
_SINGLETONS: frozenset[str] = getattr(http_parser, "SINGLETON_HEADERS", frozenset())

# aiohttp's default line and field limits (8 190 bytes): a head within both, whole.
MAX_HEAD_BYTES = 8190
MAX_FIELDS = 64
# The request target: origin-form, RFC 3986's path and query characters and `|` (OMERO.iviewer
# sends it unencoded), no fragment. Anything else goes to aiohttp.
_TARGET = rb"/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%|]*"
# RFC 9110's token, the pattern the CORS preflight check reads header names with.
_TOKEN = TOKEN.encode()
# Each part has one way to match (a field's value holds no CR, a name no colon), so a head
# that does not match fails in linear time.
_HEAD = re.compile(
    rb"(GET|HEAD|OPTIONS) (" + _TARGET + rb") HTTP/1\.([01])\r\n"
    rb"((?:" + _TOKEN + rb":[\x20-\x7e\t]*\r\n)*)\r\n"
)
# Fields whose presence means a body or an upgrade follows: aiohttp's from then on.
_BODY_OR_UPGRADE = frozenset({"content-length", "transfer-encoding", "upgrade", "expect"})
# The fields a head is judged by; the others (a browser sends a dozen: Accept, Referer,
# Sec-Fetch-*, …) are only kept, and split into name and value if something reads `headers`.
_WATCHED = frozenset(
    name.lower().encode()
    for name in _SINGLETONS
    | _BODY_OR_UPGRADE
    | {"host", "connection", "if-none-match", "x-request-id"}
)


class PlainURL:
    """The parts of a request's yarl URL that the direct and cold paths read."""

    __slots__ = ("_query", "_query_string", "raw_path")

    def __init__(self, raw_path: str, query_string: str) -> None:
        self.raw_path = raw_path
        self._query_string = query_string
        self._query: MultiDictProxy[str] | None = None

    @property
    def raw_query_string(self) -> str:
        return self._query_string

    @property
    def query(self) -> MultiDictProxy[str]:
        """The query's pairs, as yarl decodes them (made on first use: a memory hit needs
        none). Without `%` or `+` there is nothing to decode and the pairs are split here;
        otherwise yarl decodes them."""
        query = self._query
        if query is None:
            text = self._query_string
            if "%" in text or "+" in text:
                query = URL.build(query_string=text, encoded=True).query
            else:
                pairs: MultiDict[str] = MultiDict()
                for part in text.split("&"):
                    if part:
                        name, _, value = part.partition("=")
                        pairs.add(name, value)
                query = MultiDictProxy(pairs)
            self._query = query
        return query


class PlainGet:
    """A plain GET read here: what `fastpath.plain_get`, `DirectHits.answer` and
    `ColdRenders.plan` read of aiohttp's `RawRequestMessage`, under the same names.

    `headers` is made on first use: the direct and cold paths read one field, `X-Request-ID`,
    kept aside as `request_id` (`request_id_field`), so a tile builds no multidict."""

    __slots__ = ("_block", "_headers", "path", "raw", "request_id", "url")

    method = "GET"
    version = HttpVersion11
    should_close = False
    upgrade = False
    chunked = False

    def __init__(
        self, raw: bytes, path: str, url: PlainURL, block: bytes, request_id: str | None = None
    ):
        self.raw = raw  # the head's bytes, for aiohttp when the request is handed to it
        self.path = path
        self.url = url
        self._block = block  # the header fields' lines, each ending in CRLF
        self._headers: CIMultiDictProxy[str] | None = None
        self.request_id = request_id  # the first `X-Request-ID` field's value, as `get` gives

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        headers = self._headers
        if headers is None:
            fields = CIMultiDict[str]()
            for line in self._block.decode("ascii").split("\r\n")[:-1]:
                name, _, value = line.partition(":")
                fields.add(name, value.strip(" \t"))
            headers = self._headers = CIMultiDictProxy(fields)
        return headers

    def parsed(self, protocol: Any, loop: Any) -> tuple[RawRequestMessage, Any]:
        """The message and payload aiohttp's parser makes of this head, for the usual path
        (a cold tile handed back). A parser of its own: the connection's may hold bytes
        that arrived since."""
        parser = HttpRequestParser(
            protocol, loop, 2**16, max_line_size=MAX_HEAD_BYTES, max_field_size=MAX_HEAD_BYTES
        )
        messages, _upgraded, _tail = parser.feed_data(self.raw)
        message, payload = messages[0]
        return message, payload


# What the direct and cold paths read a request from: aiohttp's message, or one read here.
HeadMessage = RawRequestMessage | PlainGet


def request_id_field(message: HeadMessage) -> str | None:
    """The request's `X-Request-ID` field (the first of them), without making a read head's
    `headers`."""
    if isinstance(message, PlainGet):
        return message.request_id
    return message.headers.get("X-Request-ID")


def read_head(data: bytes) -> PlainGet | bool:
    """`data` as one plain GET (a `PlainGet`); True when it is one whole bodiless head that is
    not (another method, HTTP/1.0, `If-None-Match`, `Connection: close`): aiohttp answers it
    and reading here may go on; False for anything else: aiohttp's from here on."""
    if len(data) > MAX_HEAD_BYTES:
        return False
    m = _HEAD.fullmatch(data)
    if m is None:
        return False
    method, target, minor, block = m.groups()
    plain = method == b"GET" and minor == b"1"
    seen: set[str] = set()
    request_id = None
    if block:
        lines = block.lower().split(b"\r\n")  # the last one empty
        if len(lines) > MAX_FIELDS + 1:
            return False
        for i, line in enumerate(lines):
            name, _, value = line.partition(b":")
            if name not in _WATCHED:
                continue
            lower = name.decode("ascii")
            if lower in _BODY_OR_UPGRADE:
                return False
            if lower in _SINGLETONS or lower == "host":
                if lower in seen:
                    return False  # aiohttp answers 400
                seen.add(lower)
            if lower == "connection":
                token = value.strip(b" \t")
                if token == b"close":
                    plain = False  # the usual path closes the connection after it
                elif token != b"keep-alive":
                    return False  # `upgrade` or a list: aiohttp reads it its own way
            elif lower == "if-none-match":
                plain = False  # a 304 is the usual path's
            elif lower == "x-request-id" and request_id is None:  # as sent, not lowered
                field = block.split(b"\r\n")[i]
                request_id = field[len(name) + 1 :].decode("ascii").strip(" \t")
    if minor == b"1" and "host" not in seen:
        return False  # aiohttp answers an HTTP/1.1 request without Host with a 400
    if not plain:
        return True
    text = target.decode("ascii")
    path, _, query = text.partition("?")
    if "/." in path or "//" in path:
        return True  # dot segments and empty ones: left to yarl's reading, on the usual path
    return PlainGet(data, text, PlainURL(path, query), block, request_id)
