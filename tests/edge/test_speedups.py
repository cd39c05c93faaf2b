"""natsync.edge._speedups (C) against natsync.edge.http's Python parsers, the reference.

The C module may decline any head (None: the Python parser takes it); what it returns must be
exactly what the Python parser returns. It must also take the heads phones and servers really
send, or it would be dead weight.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsync.edge import http, proxy
from natsync.edge.http import EdgeHttpError, Framing
from tests.edge.test_http import _LINES, MAX_BODY, head

if http.speedups is None:  # pragma: no cover - CI builds it (make test installs gcc)
    pytest.fail(
        "natsync.edge._speedups is not built (or NATSYNC_PURE_PYTHON is set): "
        "make test installs a C compiler and Python's headers and builds it",
        pytrace=False,
    )
C = http.speedups

#: Heads the edge really sees: wrk and phones (requests); nginx and aiohttp (responses).
COMMON_REQUESTS = [
    head(b"GET /Microsoft-Server-ActiveSync HTTP/1.1", b"Host: 127.0.0.1:8443"),
    head(
        b"POST /Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceId=D1&DeviceType=iPhone"
        b" HTTP/1.1",
        b"Host: mail.example.test",
        b"Authorization: Basic YWxpY2U6cHc=",
        b"MS-ASProtocolVersion: 16.1",
        b"Content-Type: application/vnd.ms-sync.wbxml",
        b"User-Agent: Apple-iPhone/1806.1",
        b"X-MS-PolicyKey: 1234",
        b"Content-Length: 43",
        b"Connection: keep-alive",
    ),
    head(b"OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1", b"Host: h", b"Connection: close"),
    head(b"POST /autodiscover/autodiscover.xml HTTP/1.1", b"Host: h", b"Content-Length: 300"),
    head(b"PUT /x HTTP/1.1", b"Host: h", b"Transfer-Encoding: chunked"),
    head(b"GET / HTTP/1.0"),
    head(b"GET / HTTP/1.1", b"host: h", b"X-Forwarded-For: 6.6.6.6", b"X-Real-IP: 6.6.6.6"),
]
COMMON_RESPONSES = [
    head(
        b"HTTP/1.1 200 OK",
        b"Server: nginx/1.22.1",
        b"Date: Thu, 03 Dec 2026 10:40:00 GMT",
        b"Content-Type: application/octet-stream",
        b"Content-Length: 3",
        b"Connection: keep-alive",
    ),
    head(
        b"HTTP/1.1 200 OK",
        b"Content-Type: application/vnd.ms-sync.wbxml",
        b"MS-Server-ActiveSync: 16.1",
        b"Content-Length: 13",
        b"Date: Thu, 03 Dec 2026 10:40:00 GMT",
        b"Server: Python/3.11 aiohttp/3.9.5",
    ),
    head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked"),
    head(b"HTTP/1.1 401 Unauthorized", b"WWW-Authenticate: Basic realm=x", b"Content-Length: 0"),
    head(b"HTTP/1.1 204 No Content"),
    head(b"HTTP/1.1 100 Continue"),
    head(b"HTTP/1.0 200 OK", b"Connection: keep-alive", b"Content-Length: 1"),
    head(b"HTTP/1.1 200", b"Connection: close"),
]


def _python(parse: object, data: bytes, arg: object) -> object:
    try:
        return parse(data, arg)  # type: ignore[operator]
    except EdgeHttpError as exc:
        return exc


@pytest.mark.parametrize("data", COMMON_REQUESTS)
def test_c_takes_the_common_requests_and_agrees(data: bytes) -> None:
    parsed = C.request_head(data, MAX_BODY)
    assert parsed is not None
    assert parsed == http.python_request_head(data, MAX_BODY)


@pytest.mark.parametrize("data", COMMON_RESPONSES)
@pytest.mark.parametrize("method", [b"GET", b"POST", b"HEAD"])
def test_c_takes_the_common_responses_and_agrees(data: bytes, method: bytes) -> None:
    parsed = C.response_head(data, method)
    assert parsed is not None
    assert parsed == http.python_response_head(data, method)


def test_c_declines_what_python_refuses_and_python_says_why() -> None:
    cases = {
        head(b"GET / HTTP/1.1"): 400,  # no Host
        head(b"GET / HTTP/1.1", b"Host: a", b"Host: b"): 400,
        head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 1", b"Content-Length: 2"): 400,
        head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 2", b"Transfer-Encoding: chunked"):
        400,
        head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: %d" % (MAX_BODY + 1)): 413,
        head(b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: gzip"): 501,
        head(b"POST / HTTP/1.0", b"Transfer-Encoding: chunked"): 400,
        head(b"GET * HTTP/1.1", b"Host: a"): 400,
        head(b"GET / HTTP/1.1", b"Host: a", *[b"X-%d: 1" % i for i in range(101)]): 431,
    }  # fmt: skip
    for data, status in cases.items():
        assert C.request_head(data, MAX_BODY) is None
        with pytest.raises(EdgeHttpError) as caught:
            http.parse_request_head(data, MAX_BODY)
        assert caught.value.http_status == status, data


def test_c_declines_connection_token_lists_and_python_drops_the_named_fields() -> None:
    data = head(b"GET / HTTP/1.1", b"Host: a", b"Connection: keep-alive, X-Secret", b"X-Secret: 1")
    assert C.request_head(data, MAX_BODY) is None
    parsed = http.parse_request_head(data, MAX_BODY)
    assert parsed.connection_tokens == {b"keep-alive", b"x-secret"}
    assert b"X-Secret" not in http.backend_request(parsed, "192.0.2.1")


def test_take_splits_the_head_from_what_follows() -> None:
    request = COMMON_REQUESTS[1]
    taken = C.take_request(request + b"body" + b"GET", MAX_BODY)
    assert taken is not None
    parsed, rest = taken
    assert parsed == http.python_request_head(request, MAX_BODY)
    assert rest == b"bodyGET"
    assert C.take_request(request[:-1], MAX_BODY) is None  # incomplete: Python's to wait for
    assert http.take_request(request[:-1], MAX_BODY) is None
    response = COMMON_RESPONSES[0]
    assert C.take_response(response + b"ok\n", b"GET") == (
        http.python_response_head(response, b"GET"),
        b"ok\n",
    )
    assert C.take_response(response, b"GET")[1] == b""


def test_a_bare_lf_is_refused_through_take_request() -> None:
    data = b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n"
    assert C.take_request(data, MAX_BODY) is None
    with pytest.raises(EdgeHttpError) as caught:
        http.take_request(data, MAX_BODY)
    assert caught.value.http_status == 400


def test_c_arguments_are_checked() -> None:
    with pytest.raises(TypeError):
        C.request_head("GET / HTTP/1.0\r\n\r\n", MAX_BODY)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        C.take_response(bytearray(b"HTTP/1.1 200 OK\r\n\r\n"), b"GET")  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        C.take_request(COMMON_REQUESTS[0], 1 << 80)


def test_read_buffer_and_read_bytes_are_the_proxys_buffer() -> None:
    view = C.read_buffer(1234)
    assert view is proxy._READ_VIEW
    view[:5] = b"hello"
    assert C.read_bytes(5) == b"hello"
    assert C.read_bytes(0) == b""
    with pytest.raises(ValueError, match="more bytes"):
        C.read_bytes(len(view) + 1)
    with pytest.raises(ValueError, match="more bytes"):
        C.read_bytes(-1)


# -- generated heads: C agrees or declines, never differs, never raises

_REQUEST_LINES = st.sampled_from(
    [
        b"POST /Microsoft-Server-ActiveSync?Cmd=Sync HTTP/1.1",
        b"GET / HTTP/1.0",
        b"GET /a%20b?x=%FF HTTP/1.1",
        b"OPTIONS * HTTP/1.1",
        b"GET * HTTP/1.1",
        b"GET  / HTTP/1.1",
        b"GET / HTTP/1.2",
        b"G\x00T / HTTP/1.1",
        b"GET / HTTP/1.1 ",
        b"GET /\x7f HTTP/1.1",
    ]
)
_STATUS_LINES = st.sampled_from(
    [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.0 200 OK",
        b"HTTP/1.1 204 No Content",
        b"HTTP/1.1 304 Not Modified",
        b"HTTP/1.1 100 Continue",
        b"HTTP/1.1 2x0 OK",
        b"HTTP/1.1 404",
        b"HTTP/1.1 200 \xc3\xa9\tok",
        b"HTTP/1.1 200OK",
        b"HTTP/1.1 200 O\rK",
        b"HTTP/2 200",
    ]
)
_MORE_LINES = st.one_of(
    _LINES,
    st.sampled_from(
        [
            b"Connection: Upgrade",
            b"Connection: close ",
            b"Connection:\tKEEP-ALIVE\t",
            b"Connection: close",
            b"Keep-Alive: timeout=5",
            b"Upgrade: websocket",
            b"Proxy-Connection: keep-alive",
            b"Trailer: X",
            b"X-Forwarded-Proto: http",
            b"X-Forwarded-Host: evil",
            b"Content-Length: 999999999999999999",
            b"Content-Length: 1000000000000000000",
            b"Content-Length: ",
            b"Content-Length: +1",
            b"Transfer-Encoding: Chunked",
            b"Transfer-Encoding: chunked, gzip",
            b"Host:",
            b"HOST: x",
            b"X-\xff: y",
        ]
    ),
    st.binary(max_size=12).map(lambda b: b"X-Gen: " + b),
)


@settings(deadline=None, max_examples=600)
@given(_REQUEST_LINES, st.lists(_MORE_LINES, max_size=8), st.binary(max_size=6))
def test_c_request_head_agrees_or_declines(line: bytes, lines: list[bytes], rest: bytes) -> None:
    data = head(line, *lines)
    parsed = C.request_head(data, MAX_BODY)
    if parsed is not None:
        assert parsed == http.python_request_head(data, MAX_BODY)
    taken = C.take_request(data + rest, MAX_BODY)
    if taken is not None:  # the head ends at the first blank line
        split = http.split_head(data + rest)
        assert split is not None
        assert taken == (http.python_request_head(split[0], MAX_BODY), split[1])
    assert _same(http.take_request, http.python_request_head, data, MAX_BODY)


@settings(deadline=None, max_examples=600)
@given(
    _STATUS_LINES,
    st.lists(_MORE_LINES, max_size=8),
    st.sampled_from([b"GET", b"HEAD", b"POST"]),
    st.binary(max_size=6),
)
def test_c_response_head_agrees_or_declines(
    line: bytes, lines: list[bytes], method: bytes, rest: bytes
) -> None:
    data = head(line, *lines)
    parsed = C.response_head(data, method)
    if parsed is not None:
        assert parsed == http.python_response_head(data, method)
    taken = C.take_response(data + rest, method)
    if taken is not None:
        split = http.split_head(data + rest)
        assert split is not None
        assert taken == (http.python_response_head(split[0], method), split[1])
    assert _same(http.take_response, http.python_response_head, data, method)


def _same(take: object, python: object, data: bytes, arg: object) -> bool:
    """The public take_* (C first) and the Python parser give the same outcome for *data*."""
    taken = _python(take, data, arg)
    reference = _python(python, data, arg)
    split = http.split_head(data) if data.count(b"\n") == data.count(b"\r\n") else None
    if split is None or split[1]:  # a bare LF, or a blank line inside: not one whole head
        return True
    if isinstance(reference, EdgeHttpError):
        return isinstance(taken, EdgeHttpError) and taken.http_status == reference.http_status
    return taken == (reference, b"")


@settings(deadline=None, max_examples=800)
@given(st.binary(max_size=300), st.sampled_from([b"GET", b"HEAD"]))
def test_c_never_raises_on_any_bytes(data: bytes, method: bytes) -> None:
    for candidate in (data, data + b"\r\n\r\n", b"GET / HTTP/1.1\r\n" + data + b"\r\n\r\n"):
        request = C.request_head(candidate, MAX_BODY)
        assert request is None or request == http.python_request_head(candidate, MAX_BODY)
        response = C.response_head(b"HTTP/1.1 200 OK\r\n" + candidate, method)
        if response is not None:
            assert response == http.python_response_head(b"HTTP/1.1 200 OK\r\n" + candidate, method)
        C.take_request(candidate, MAX_BODY)
        C.take_response(candidate, method)


def test_framing_members_come_back_as_they_went_in() -> None:
    parsed = C.request_head(COMMON_REQUESTS[1], MAX_BODY)
    assert parsed is not None
    assert parsed.framing is Framing.LENGTH
    assert parsed.connection_tokens is http._COMMON_CONNECTION[b"keep-alive"]


def test_pure_python_switch_leaves_the_c_module_out() -> None:
    code = (
        "from natsync.edge import http, proxy\n"
        "assert http.speedups is None\n"
        "assert proxy._read_bytes is proxy._python_read_bytes\n"
        "h = http.parse_request_head(b'GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n', 10)\n"
        "assert h.has_host\n"
    )
    env = {**os.environ, http.PURE_PYTHON_ENV: "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


# -- the serialisers: C gives the Python serialiser's bytes or declines

_IPS = st.sampled_from(["192.0.2.7", "2001:db8::1", "?"])


def _serialised_alike(request: http.RequestHead | None, ip: str) -> bytes | None:
    """C's head for the server is the Python one's, or None; the public one is the Python's."""
    if request is None:
        return None
    fast = C.backend_request(request, ip)
    reference = http.python_backend_request(request, ip)
    assert fast is None or fast == reference
    assert http.backend_request(request, ip) == reference
    return fast


def _answered_alike(response: http.ResponseHead | None) -> list[bytes | None]:
    if response is None:
        return []
    given = []
    for keep_alive in (True, False):
        fast = C.client_response(response, keep_alive)
        reference = http.python_client_response(response, keep_alive)
        assert fast is None or fast == reference
        assert http.client_response(response, keep_alive) == reference
        given.append(fast)
    return given


@settings(deadline=None, max_examples=600)
@given(_REQUEST_LINES, st.lists(_MORE_LINES, max_size=8), _IPS)
def test_c_backend_request_agrees_or_declines(line: bytes, lines: list[bytes], ip: str) -> None:
    data = head(line, *lines)
    try:  # the head as either parser makes it (the Python parser's objects: C declines them)
        _serialised_alike(http.python_request_head(data, MAX_BODY), ip)
    except EdgeHttpError:
        return
    _serialised_alike(C.request_head(data, MAX_BODY), ip)


@settings(deadline=None, max_examples=600)
@given(_STATUS_LINES, st.lists(_MORE_LINES, max_size=8), st.sampled_from([b"GET", b"HEAD"]))
def test_c_client_response_agrees_or_declines(
    line: bytes, lines: list[bytes], method: bytes
) -> None:
    data = head(line, *lines)
    try:
        _answered_alike(http.python_response_head(data, method))
    except EdgeHttpError:
        return
    _answered_alike(C.response_head(data, method))


@pytest.mark.parametrize("data", COMMON_REQUESTS)
def test_c_serialises_the_common_requests(data: bytes) -> None:
    parsed = C.request_head(data, MAX_BODY)
    assert parsed is not None
    several_dropped = parsed.hop and parsed.hop_at < 0  # the Python regex pass's
    if parsed.framing is not Framing.CHUNKED and not several_dropped:  # chunked: Python's
        assert _serialised_alike(parsed, "192.0.2.7") is not None


@pytest.mark.parametrize("data", COMMON_RESPONSES)
def test_c_serialises_the_common_responses(data: bytes) -> None:
    parsed = C.response_head(data, b"GET")
    assert parsed is not None
    given = _answered_alike(parsed)
    if parsed.status >= 200 and parsed.status not in (204, 304):
        assert None not in given
