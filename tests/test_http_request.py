"""The request helpers every route uses: query parameters read as PostHog's servers read them."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from hypothesis import given
from hypothesis import strategies as st

from hogflare.http import Request

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
