"""Receive one file field of a `multipart/form-data` request body straight into a sink, as it arrives.

Starlette's form parser spools a file part to a temporary file (in the system temporary directory) before the
route runs; a checkpoint can be tens of GiB, so `receive_file_field` parses the body stream itself and hands the
file's bytes to `sink.write` in pieces of about `FLUSH_BYTES`, in a worker thread (no copy through /tmp, the event
loop never waits on the disk). Other fields are ignored. BadUpload: not multipart, no such field, or the field
twice (IncompleteBody: it ended early); the body's size limit is `middleware.RequestGuard`'s, the file's the sink's.
"""

from __future__ import annotations

from typing import Protocol

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

FLUSH_BYTES = 8 * 1024 * 1024


class BadUpload(ValueError):
    """A request body that is not one multipart file upload in the expected field."""


class IncompleteBody(BadUpload):
    """The body ended early: the client went away, or `middleware.RequestGuard` refused it (413 sent already)."""


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...


class _FieldParser:
    """Callbacks of `MultipartParser` collecting the data of the parts named `field`."""

    def __init__(self, field: str, boundary: bytes):
        self.field = field.encode()
        self.header_name = self.header_value = b""
        self.disposition = b""
        self.in_field = False
        self.found = 0
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end})

    def _part_begin(self) -> None:
        self.disposition = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def _header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name = self.header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        self.in_field = options.get(b"name") == self.field
        self.found += self.in_field

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_field:
            self.pending.append(bytes(data[start:end]))
            self.pending_bytes += end - start

    def _part_end(self) -> None:
        self.in_field = False

    def take(self) -> bytes:
        data = b"".join(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        return data


async def receive_file_field(request: Request, field: str, sink: Sink) -> int:
    """Stream the `field` file part of the multipart body into `sink`; the bytes written."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise BadUpload(f"{field}: send the file as multipart/form-data (field {field!r})")
    parser = _FieldParser(field, boundary)
    written = 0
    try:
        async for chunk in request.stream():
            parser.parser.write(chunk)
            if parser.found > 1:
                raise BadUpload(f"{field}: give one file")
            if parser.pending_bytes >= FLUSH_BYTES:
                data = parser.take()
                await run_in_threadpool(sink.write, data)
                written += len(data)
        parser.parser.finalize()
    except FormParserError as error:
        raise BadUpload(f"{field}: malformed multipart body ({error})") from None
    except ClientDisconnect:
        raise IncompleteBody(f"{field}: incomplete request body") from None
    if parser.found != 1:
        raise BadUpload(f"{field}: missing (send the file in the multipart field {field!r})")
    data = parser.take()
    if data:
        await run_in_threadpool(sink.write, data)
        written += len(data)
    return written
