"""The HTTP conformance corpus: loading the cases and checking responses strictly.

Shared by the unit run (tests/http/test_http_corpus.py, HTTPConnection over a socketpair),
the integration run (tests/test_http_conformance.py, a real server per worker class) and the
fuzz tests. The format is described in tests/http/corpus/README.md.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parent / "corpus"

#: Settings every case runs with (unit and integration alike); a case's `settings` add to
#: them. Short header timeout so the timeout cases are quick; a body limit for the 413 cases.
BASE_SETTINGS: dict[str, Any] = {"header_timeout": 1, "limit_request_body": 4096}

_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|[rnt0\\])")
_REPEAT = re.compile(r"\{\{(\d+)\*(.*?)\}\}")
_SIMPLE = {"r": "\r", "n": "\n", "t": "\t", "0": "\0", "\\": "\\"}


def decode(text: str, layout_newlines: bool = True) -> bytes:
    """Escape-decode corpus text: \\r \\n \\t \\0 \\\\ \\xNN, and {{N*text}} repeats text.

    Real newlines in the file are layout only (dropped) when `layout_newlines`.
    """
    if layout_newlines:
        text = "".join(text.splitlines())
    text = _REPEAT.sub(lambda m: m.group(2) * int(m.group(1)), text)

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        return chr(int(code[1:], 16)) if code[0] == "x" else _SIMPLE[code]

    return _ESCAPE.sub(one, text).encode("latin-1")


@dataclass
class Case:
    name: str  # "invalid/cl_te_both"
    description: str
    raw: bytes
    statuses: list[int]  # every response expected, in order ([] = none at all)
    valid: bool  # reaches the application
    settings: dict[str, Any] = field(default_factory=dict)
    shutdown: bool = True  # the client half-closes after sending (False: it waits)
    app: bool | None = None  # invalid cases: must the app (not) run; None = either
    expect: dict[int, dict[str, Any]] = field(default_factory=dict)  # response index -> parse
    version: str = "1.1"  # of the status lines the application's responses carry

    @property
    def all_settings(self) -> dict[str, Any]:
        return {**BASE_SETTINGS, **self.settings}

    def __str__(self) -> str:
        return self.name


def load_case(path: Path) -> Case:
    text = path.read_text(encoding="utf-8")
    meta, sep, raw = text.partition("\n---\n")
    if not sep:
        raise ValueError(f"{path}: no '---' line before the raw request")
    name = f"{path.parent.name}/{path.stem}"
    case = Case(name, "", decode(raw), [], path.parent.name == "valid")
    for line in meta.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        index = 0
        if "@" in key:
            key, _, n = key.partition("@")
            index = int(n) - 1
        expect = case.expect.setdefault(index, {})
        if key == "description":
            case.description = value
        elif key == "status":
            case.statuses = [] if value == "-" else [int(v) for v in value.split()]
        elif key == "settings":
            case.settings = json.loads(value)
        elif key == "shutdown":
            case.shutdown = value == "yes"
        elif key == "version":
            case.version = value
        elif key == "app":
            case.app = {"called": True, "not-called": False}[value]
        elif key in ("method", "path", "query", "protocol", "scheme"):
            expect[key] = decode(value).decode("latin-1")
        elif key == "body":
            expect["body"] = decode(value).decode("latin-1")
        elif key == "header":
            hname, _, hvalue = value.partition("=")
            expect.setdefault("headers", {})[hname] = decode(hvalue).decode("latin-1")
        elif key == "noheader":
            expect.setdefault("absent", []).append(value)
        else:
            raise ValueError(f"{path}: unknown key {key!r}")
    case.expect = {i: e for i, e in case.expect.items() if e}
    if not case.description:
        raise ValueError(f"{path}: a description is required")
    if case.valid and not case.statuses:
        raise ValueError(f"{path}: a valid case expects responses")
    if not case.valid and case.app is None and case.statuses:
        case.app = False  # refused cases never reach the application
    return case


def load_cases() -> list[Case]:
    return [load_case(p) for p in sorted(CORPUS.glob("*/*.http"))]


# -- strict response parsing -------------------------------------------------------------

_STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) ([1-5][0-9][0-9]) [\t !-~\x80-\xff]*")
_FIELD_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+): ?([\t !-~\x80-\xff]*)")
_CHUNK_LINE = re.compile(rb"([0-9a-f]+)\r\n")


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    version: str = "1.1"

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return ", ".join(values) if values else None

    def json(self) -> Any:
        return json.loads(self.body)


class Malformed(AssertionError):
    """The server sent something that is not well-formed HTTP/1.1."""


def parse_responses(raw: bytes, heads: list[bool] | tuple[bool, ...] = ()) -> list[Response]:
    """Split what a client received into responses, checking the grammar and the framing.

    Every response must be complete: a status line, field lines, CRLF, and a body framed by
    Content-Length, chunked or (last response only) the end of the connection. `heads[i]`
    says the i-th final response answers a HEAD request (no body, RFC 9110 §9.3.2).
    """
    out: list[Response] = []
    finals = 0
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\r\n\r\n", pos)
        if end < 0:
            raise Malformed(f"incomplete response head: {raw[pos:pos + 200]!r}")
        lines = raw[pos:end].split(b"\r\n")
        pos = end + 4
        status = _STATUS_LINE.fullmatch(lines[0])
        if status is None:
            raise Malformed(f"bad status line {lines[0]!r}")
        headers = []
        for line in lines[1:]:
            match = _FIELD_LINE.fullmatch(line)
            if match is None or b"\n" in line or b"\r" in line:
                raise Malformed(f"bad header line {line!r}")
            headers.append((match.group(1).decode("ascii"), match.group(2).decode("latin-1")))
        resp = Response(int(status.group(2)), headers, b"", status.group(1).decode())
        out.append(resp)
        code = resp.status
        head_request = code >= 200 and finals < len(heads) and heads[finals]
        finals += code >= 200
        lengths = [v for n, v in headers if n.lower() == "content-length"]
        te = resp.header("Transfer-Encoding")
        if len(lengths) > 1 or (lengths and te):
            raise Malformed(f"ambiguous framing: {headers}")
        if code < 200 or code in (204, 304) or head_request:
            if (code < 200 or code == 204) and (lengths or te):
                raise Malformed(f"framing headers on a {code}")
            continue
        if te is not None:
            if te != "chunked":
                raise Malformed(f"Transfer-Encoding {te!r}")
            body = []
            while True:
                match = _CHUNK_LINE.match(raw, pos)
                if match is None:
                    raise Malformed(f"bad chunk at {raw[pos:pos + 50]!r}")
                size = int(match.group(1), 16)
                pos = match.end()
                if raw[pos + size : pos + size + 2] != b"\r\n":
                    raise Malformed("chunk not followed by CRLF")
                body.append(raw[pos : pos + size])
                pos += size + 2
                if size == 0:
                    break
            resp.body = b"".join(body)
        elif lengths:
            if not lengths[0].isdigit():
                raise Malformed(f"Content-Length {lengths[0]!r}")
            size = int(lengths[0])
            if len(raw) - pos < size:
                raise Malformed(f"body shorter than Content-Length {size}")
            resp.body = raw[pos : pos + size]
            pos += size
        else:
            if (resp.header("Connection") or "").lower() != "close":
                raise Malformed("close-delimited body without Connection: close")
            resp.body = raw[pos:]
            pos = len(raw)
    return out


def check_case(case: Case, raw: bytes, keepalive: bool = True) -> list[Response]:
    """Assert that `raw` (everything the client got) is what `case` expects.

    Without keep-alive (the sync worker) the server closes after the first final response,
    so only that prefix of the expected responses is required.
    """
    responses = parse_responses(raw)
    got = [r.status for r in responses]
    expected = case.statuses
    if not keepalive:
        cut = next((i + 1 for i, s in enumerate(expected) if s >= 200), len(expected))
        expected = expected[:cut]
    assert got == expected, f"{case.name}: statuses {got}, expected {expected}\n{raw[:600]!r}"
    for i, resp in enumerate(responses):
        if resp.status >= 400:
            assert resp.header("Connection") == "close", f"{case.name}: error without close"
            assert i == len(responses) - 1, f"{case.name}: a response after an error"
            assert resp.header("Content-Type") != "application/json", case.name
        elif resp.status >= 200:
            # The application's responses answer in the request's version (as gunicorn).
            assert resp.version == case.version, f"{case.name}: HTTP/{resp.version} response"
    for index, want in case.expect.items():
        if index >= len(responses):
            continue  # not served (no keep-alive)
        data = responses[index].json()
        for key in ("method", "path", "query", "protocol", "scheme", "body"):
            if key in want:
                assert data[key] == want[key], f"{case.name}: {key} {data[key]!r}"
        for name, value in want.get("headers", {}).items():
            assert data["headers"].get(name) == value, (
                f"{case.name}: {name} {data['headers'].get(name)!r} != {value!r}")
        for name in want.get("absent", []):
            assert name not in data["headers"], f"{case.name}: {name} present"
    return responses
