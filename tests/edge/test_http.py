"""The edge's framing rules without sockets: heads, forwarded heads, chunked scanning."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsync.edge import http
from natsync.edge.http import ChunkedScanner, EdgeHttpError, Framing
from natsync.edge.rules import PublishRules

MAX_BODY = 1 << 20


def head(*lines: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n"


def test_request_head_keeps_field_order_and_values_with_tabs_and_obs_text() -> None:
    parsed = http.parse_request_head(
        head(
            b"POST /Microsoft-Server-ActiveSync?Cmd=Ping HTTP/1.1",
            b"Host: mail.example.test",
            b"X-A:\tvalue with\ttab \t",
            b"X-B: caf\xc3\xa9",
            b"Content-Length: 12",
        ),
        MAX_BODY,
    )
    assert parsed.fields[1:3] == [(b"X-A", b"value with\ttab"), (b"X-B", b"caf\xc3\xa9")]
    assert parsed.framing == Framing.LENGTH
    assert parsed.length == 12
    assert parsed.path == "/Microsoft-Server-ActiveSync"
    assert parsed.query == "Cmd=Ping"


def test_forwarded_head_is_rebuilt_without_hop_by_hop_and_client_forwarding_fields() -> None:
    parsed = http.parse_request_head(
        head(
            b"POST /x HTTP/1.1",
            b"Host: h",
            b"Connection: keep-alive, X-Secret",
            b"X-Secret: 1",
            b"X-Forwarded-For: 6.6.6.6",
            b"Transfer-Encoding: chunked",
            b"Authorization: Basic YTpi",
        ),
        MAX_BODY,
    )
    out = http.backend_request(parsed, "192.0.2.7")
    assert out == (
        b"POST /x HTTP/1.1\r\nHost: h\r\nAuthorization: Basic YTpi\r\n"
        b"Transfer-Encoding: chunked\r\nX-Forwarded-For: 192.0.2.7\r\n"
        b"X-Forwarded-Proto: https\r\n\r\n"
    )


def test_response_framing() -> None:
    ok = http.parse_response_head(head(b"HTTP/1.1 200 OK", b"Content-Length: 3"), b"POST")
    assert (ok.framing, ok.length, ok.keep_alive) == (Framing.LENGTH, 3, True)
    close = http.parse_response_head(head(b"HTTP/1.1 200 OK"), b"POST")
    assert (close.framing, close.keep_alive) == (Framing.CLOSE, False)
    no_body = http.parse_response_head(head(b"HTTP/1.1 204 No Content"), b"POST")
    assert no_body.framing == Framing.NONE
    with pytest.raises(EdgeHttpError) as info:
        http.parse_response_head(
            head(b"HTTP/1.1 200 OK", b"Content-Length: 1", b"Transfer-Encoding: chunked"), b"GET"
        )
    assert info.value.http_status == 502


CHUNKED = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nTrailer-A: 1\r\n\r\n"


def test_chunked_scanner_finds_the_end_and_leaves_the_next_message() -> None:
    scanner = ChunkedScanner()
    assert scanner.feed(CHUNKED + b"GET / HTTP/1.1") == len(CHUNKED)
    assert scanner.done


@settings(deadline=None, max_examples=300)
@given(st.lists(st.integers(min_value=1, max_value=len(CHUNKED)), max_size=20))
def test_chunked_scanner_is_the_same_whatever_the_packet_boundaries(cuts: list[int]) -> None:
    scanner = ChunkedScanner()
    bounds = sorted({0, *cuts, len(CHUNKED)})
    used = 0
    for start, end in itertools.pairwise(bounds):
        used += scanner.feed(CHUNKED[start:end])
    assert used == len(CHUNKED)
    assert scanner.done


@settings(deadline=None)
@given(st.binary(max_size=200))
def test_chunked_scanner_accepts_or_raises_only_our_error(data: bytes) -> None:
    scanner = ChunkedScanner()
    status = 0
    used = 0
    try:
        used = scanner.feed(data)
    except EdgeHttpError as exc:
        status = exc.http_status
    assert status in (0, 400)
    assert 0 <= used <= len(data)


@settings(deadline=None)
@given(st.binary(max_size=400))
def test_request_heads_parse_or_raise_only_our_error(data: bytes) -> None:
    status = 0
    try:
        end = http.head_end(data)
        if end > 0:
            http.parse_request_head(data[:end], MAX_BODY)
    except EdgeHttpError as exc:
        status = exc.http_status
    assert status in (0, 400, 413, 431, 501)


def test_eas_fields_from_plain_query_and_basic_auth() -> None:
    parsed = http.parse_request_head(
        head(
            b"POST /Microsoft-Server-ActiveSync?Cmd=Sync&User=bob&DeviceId=D9&DeviceType=iPhone"
            b" HTTP/1.1",
            b"Host: h",
            b"Authorization: Basic YWxpY2U6cHc=",
        ),
        MAX_BODY,
    )
    assert http.eas_fields(parsed) == http.EasFields("alice", "D9", "iPhone", "Sync")


@pytest.mark.parametrize(
    ("path", "published"),
    [
        ("/Microsoft-Server-ActiveSync", True),
        ("/microsoft-server-activesync/", True),
        ("/Autodiscover/Autodiscover.xml", True),
        ("/.well-known/acme-challenge/abc", True),
        ("/.well-known/acme-challenge/", False),
        ("/.well-known/acme-challenge/../../owa", False),
        ("/Microsoft-Server-ActiveSync/x", False),
        ("/Microsoft-Server-ActiveSync%2f", False),
        ("/owa", False),
    ],
)
def test_publishing_rules(path: str, published: bool) -> None:
    assert PublishRules().allows(path) is published


# -- the one-match fast path agrees with the line-by-line parser

_LINES = st.sampled_from(
    [
        b"Host: mail.example.test",
        b"host:h",
        b"Content-Length: 12",
        b"content-length:0",
        b"Content-Length: 1x",
        b"Content-Length: 00000000000000000001",
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: gzip",
        b"Connection: close",
        b"Connection: keep-alive, X-Secret",
        b"connection: Keep-Alive",
        b"X-Secret: 1",
        b"X-Forwarded-For: 6.6.6.6",
        b"Forwarded: for=x",
        b"TE: trailers",
        b"Authorization: Basic YWxpY2U6cHc=",
        b"X-A:\tvalue with\ttab \t",
        b"X-B: caf\xc3\xa9",
        b" folded",
        b"Bad Name: x",
        b"X-C : x",
        b"X-D: a\x01b",
        b"X-E: a\rb",
        b"X-F: a\nb",
        b"NoColon",
        b"",
    ]
)
_REQUEST_LINES = st.sampled_from(
    [
        b"POST /Microsoft-Server-ActiveSync?Cmd=Sync HTTP/1.1",
        b"GET / HTTP/1.0",
        b"OPTIONS * HTTP/1.1",
        b"GET * HTTP/1.1",
        b"GET http://x/ HTTP/1.1",
        b"GET  / HTTP/1.1",
        b"GET / HTTP/2.0",
        b"G\x00T / HTTP/1.1",
    ]
)


def _outcome(parse: object, data: bytes) -> object:
    try:
        parsed = parse(data, MAX_BODY)  # type: ignore[operator]
    except EdgeHttpError as exc:
        return exc.http_status
    return (
        parsed.method, parsed.target, parsed.version, parsed.fields, parsed.has_host,
        parsed.framing, parsed.length, parsed.keep_alive, parsed.connection_tokens, parsed.hop,
        parsed.length_field,
    )  # fmt: skip


@settings(deadline=None, max_examples=400)
@given(_REQUEST_LINES, st.lists(_LINES, max_size=8))
def test_fast_request_parse_agrees_with_the_line_by_line_parser(
    request_line: bytes, lines: list[bytes]
) -> None:
    data = head(request_line, *lines)
    fast = _outcome(http.parse_request_head, data)  # the C module first, when built
    assert fast == _outcome(http._strict_request_head, data)
    assert _outcome(http.python_request_head, data) == fast
    if not isinstance(fast, int):  # and what is forwarded means the same
        forwarded = http.backend_request(http.parse_request_head(data, MAX_BODY), "192.0.2.7")
        rebuilt = http.backend_request(http._strict_request_head(data, MAX_BODY), "192.0.2.7")
        assert http.parse_request_head(forwarded, MAX_BODY).fields == (
            http.parse_request_head(rebuilt, MAX_BODY).fields
        )
        names = {k.lower() for k, _ in http.parse_request_head(forwarded, MAX_BODY).fields}
        dropped = {b"connection", b"x-forwarded-host", b"forwarded", b"te", b"keep-alive"}
        listed = http.parse_request_head(data, MAX_BODY).connection_tokens
        assert not names & (dropped | listed)


@settings(deadline=None, max_examples=300)
@given(
    st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK", b"HTTP/1.1 204 No Content",
                     b"HTTP/1.1 100 Continue", b"HTTP/1.1 2x0 OK", b"HTTP/1.1 404"]),
    st.lists(_LINES, max_size=6),
)  # fmt: skip
def test_fast_response_parse_agrees_with_the_line_by_line_parser(
    status_line: bytes, lines: list[bytes]
) -> None:
    data = head(status_line, *lines)

    def outcome(parse: object) -> object:
        try:
            parsed = parse(data, b"GET")  # type: ignore[operator]
        except EdgeHttpError as exc:
            return exc.http_status
        return (
            parsed.status, parsed.fields, parsed.framing, parsed.length, parsed.keep_alive,
            http.client_response(parsed, parsed.keep_alive).count(b"\r\n"),
        )  # fmt: skip

    fast = outcome(http.parse_response_head)  # the C module first, when built
    strict = outcome(http._strict_response_head)
    if isinstance(strict, int):
        assert fast == 502
    else:
        assert fast == strict
    assert outcome(http.python_response_head) == fast


def test_response_head_for_the_phone_drops_connection_fields_and_keeps_the_length() -> None:
    parsed = http.parse_response_head(
        head(b"HTTP/1.1 200 OK", b"Server: nginx", b"Content-Length: 3",
             b"Connection: keep-alive", b"Keep-Alive: timeout=5"),
        b"POST",
    )  # fmt: skip
    assert http.client_response(parsed, True) == (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\n\r\n"
    )
    assert http.client_response(parsed, False).endswith(
        b"Content-Length: 3\r\nConnection: close\r\n\r\n"
    )
