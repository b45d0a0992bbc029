"""The request helpers every route uses: query parameters read as PostHog's servers read them."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hogflare.errors import PayloadError, PayloadTooLargeError
from hogflare.http import Request, StallWatch

_QUERY_TEXT = st.text(alphabet=st.sampled_from("abv=&;+%20x.-_"), max_size=40)


async def _no_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


def _request(query: str) -> Request:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/flags",
        "headers": [],
        "query_string": query.encode(),
    }
    return Request(scope, _no_receive)


@given(_QUERY_TEXT)
def test_query_parameters_read_as_the_standard_library_reads_them(query: str) -> None:
    request = _request(query)
    expected = parse_qs(query)
    for name in ("a", "b", "v", "x", ""):
        values = expected.get(name)
        assert request.query_param(name) == (values[0] if values else None)


def test_typical_sdk_queries() -> None:
    request = _request("v=2&config=true&compression=gzip-js&ver=1.290.0&_=1732900000000")
    assert request.query_param("v") == "2"
    assert request.query_param("compression") == "gzip-js"
    assert request.query_param("ip") is None
    assert _request("ip=1&ip=0").query_param("ip") == "1"
    assert _request("token=phc%20x+y").query_param("token") == "phc x y"


class _Chunks:
    """``receive`` as Granian calls it: each chunk with ``more_body`` true, the end of the body
    said by one more, empty message."""

    def __init__(self, *chunks: bytes) -> None:
        self.messages = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]
        self.messages.append({"type": "http.request", "body": b"", "more_body": False})
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        return self.messages.pop(0)


def _post(receive: _Chunks, headers: list[tuple[bytes, bytes]], http_version: str = "1.1") -> Request:
    scope = {
        "type": "http",
        "http_version": http_version,
        "method": "POST",
        "path": "/e",
        "headers": headers,
        "query_string": b"",
    }
    return Request(scope, receive)


async def test_a_body_of_the_declared_length_needs_no_further_receive() -> None:
    receive = _Chunks(b'{"a":', b"1}")
    body = await _post(receive, [(b"content-length", b"7")]).body(100, StallWatch(5))
    assert body == b'{"a":1}'
    assert receive.calls == 2
    empty = _Chunks()
    assert await _post(empty, [(b"content-length", b"0")]).body(100, StallWatch(5)) == b""
    assert empty.calls == 0


async def test_a_body_without_a_binding_length_is_read_to_its_end() -> None:
    for headers in (
        [],
        [(b"transfer-encoding", b"chunked")],
        [(b"content-length", b"3"), (b"transfer-encoding", b"chunked")],
        [(b"content-length", b"3"), (b"content-length", b"3")],
        [(b"content-length", b"\xb2")],  # a superscript 2: a digit to isdigit(), not to int()
    ):
        receive = _Chunks(b"abc", b"def")
        assert await _post(receive, headers).body(100, StallWatch(5)) == b"abcdef"
        assert receive.calls == 3


async def test_an_http2_stream_is_read_to_its_end_whatever_its_length_says() -> None:
    """HTTP/2 checks a stream's length only at its next frame: a stream that breaks it is reset
    there, and its body must not have been stored before."""
    receive = _Chunks(b"abc")
    body = await _post(receive, [(b"content-length", b"3")], http_version="2").body(100, StallWatch(5))
    assert body == b"abc"
    assert receive.calls == 2


async def test_a_body_longer_than_its_declared_length_is_refused() -> None:
    with pytest.raises(PayloadError, match="longer than its Content-Length"):
        await _post(_Chunks(b"ab", b"cd"), [(b"content-length", b"3")]).body(100, StallWatch(5))


async def test_a_declared_length_above_the_limit_is_refused_before_any_receive() -> None:
    receive = _Chunks(b"abc")
    with pytest.raises(PayloadTooLargeError):
        await _post(receive, [(b"content-length", b"101")]).body(100, StallWatch(5))
    assert receive.calls == 0
