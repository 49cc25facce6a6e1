"""The exception family. One middleware in `http/middleware.py` maps these to statuses.

Each error carries a machine-readable `code` and a human `detail` that names the parameter
and what was expected, so that every 4xx/5xx body can say how to fix the request.

`detail` is public: it is sent to whoever asked, so it never holds a filesystem path, a store
URL or exception text. What an operator needs to find the fault (the path, the exception)
goes in `internal`, which the error middleware writes to the server log with the request id
and never sends.
"""

from __future__ import annotations

import re

# user:password@ in a URL (catalog entries and store URLs may carry credentials).
_URL_PASSWORD = re.compile(r"(?P<keep>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")


def redact_credentials(text: str) -> str:
    """`text` with the password of every `scheme://user:password@` URL replaced by `***`."""
    return _URL_PASSWORD.sub(r"\g<keep>***@", text)


class IdrServeError(Exception):
    """Base of every error the server answers deliberately."""

    status = 500
    code = "internal_error"

    def __init__(
        self, detail: str, *, param: str | None = None, internal: str | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.param = param
        # Log-only, never part of a response; no URL password reaches the log either.
        self.internal = None if internal is None else redact_credentials(internal)

    def __str__(self) -> str:
        # Tracebacks and `log.exception` show what an operator needs; `body()` stays public.
        return self.detail if self.internal is None else f"{self.detail} [{self.internal}]"

    def body(self) -> dict[str, object]:
        out: dict[str, object] = {"error": self.code, "detail": self.detail}
        if self.param is not None:
            out["param"] = self.param
        return out


class BadRequest(IdrServeError):
    status = 400
    code = "bad_request"


class NotFound(IdrServeError):
    status = 404
    code = "not_found"


class Forbidden(IdrServeError):
    status = 403
    code = "forbidden"


class TooLarge(IdrServeError):
    """A request over a configured size limit (413, documented in the README)."""

    status = 413
    code = "too_large"


class UnsupportedFormat(IdrServeError):
    """The image is stored in a format idrserve cannot serve (a JPEG, a CZI, a TIFF with a
    compression that cannot be decoded): 415, with the supported list and how to convert."""

    status = 415
    code = "unsupported_format"


class SourceUnavailable(IdrServeError):
    """Storage or OMERO unreachable: 503 with Retry-After, only for the affected images."""

    status = 503
    code = "source_unavailable"
    retry_after_s = 5


class CatalogLoading(SourceUnavailable):
    """The catalog is still being read at start-up: no image can be located yet."""

    code = "catalog_loading"
    retry_after_s = 5


class SourceError(IdrServeError):
    """Stored data could not be read or decoded (corrupt chunk, bad metadata)."""

    status = 502
    code = "source_error"


class UpstreamTimeout(IdrServeError):
    """The per-request deadline expired."""

    status = 504
    code = "timeout"


class Overloaded(IdrServeError):
    """Admission control refused the request (see `admission.py`): 503 with Retry-After."""

    status = 503
    code = "overloaded"

    def __init__(self, detail: str, *, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s
