"""Hypothesis strategies built from botocore's service models, plus hostile mutations of the wire request.

A case is drawn in three steps: parameters that follow the operation's input shape (sometimes pushed just past
its limits), botocore's own serializer lays them out as the real SDK would (URI, query, headers, body), then one
mutation makes the request hostile in a way botocore would refuse to produce (malformed JSON, wrong types,
missing required members, huge values, percent-encoding tricks, invalid ARNs). The result is plain data
(``WireRequest``) that ``tests/fuzz/wire.py`` signs and sends with httpx.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field, replace
from typing import Any

from botocore.model import OperationModel, Shape
from botocore.serialize import create_serializer
from hypothesis import strategies as st

MAX_DEPTH = 4  # recursive shapes stop growing here (only required members below)
SMALL = 24  # longest generated "ordinary" string; limits are probed by the edge values instead
BIG = 1_000_000  # "far over the limit": a million characters
URL_VALUE_CAP = 4096  # a URI or query member stays under httpx's 64 KiB URL limit even when percent-encoded

# Strings that have broken parsers, databases, logs and path handling before.
HOSTILE_TEXT: tuple[str, ...] = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",  # lone high surrogate (valid JSON escape, not encodable as UTF-8)
    "x\udfffy",
    "\u202eevil\u202c",  # RTL override
    "e" + "\u0301" * 64,  # combining marks
    "\ufeffbom",
    "\uffff\ufffe",
    "\U0001d573\U0001f600" * 8,
    "\t\r\n",
    "../../../../etc/passwd",
    "..",
    "%00%2F%2e%2e",
    "'; DROP TABLE runtimes; --",
    "<Error>&amp;</Error>",
    "${jndi:ldap://127.0.0.1/x}",
    "null",
    "-1",
    "9" * 40,
)

INVALID_ARNS: tuple[str, ...] = (
    "arn",
    "arn:",
    "arn:aws",
    "arn:aws:bedrock-agentcore:us-west-2:123456789012:runtime/",
    "arn:aws:bedrock-agentcore:us-west-2:123456789012:runtime/a/b/c",
    "arn:aws:bedrock-agentcore:us-west-2:12345678901x:runtime/abc-1234567890",
    "arn:aws:bedrock-agentcore:::runtime/abc-1234567890",
    "arn:aws:s3:::bucket",
    "arn:aws:bedrock-agentcore:us-west-2:123456789012:runtime/abc/runtime-endpoint/",
    "arn:aws:bedrock-agentcore:us-west-2:123456789012:" + "x" * 3000,
    "arn:aws:bedrock-agentcore:us-west-2:123456789012:runtime/\u202e\x00",
)

# Percent-encoding tricks for one URI segment (already encoded: sent as they are).
URI_TRICKS: tuple[str, ...] = (
    "%2F",
    "%252F",
    "a%2Fb%2Fc",
    "%00",
    "%",
    "%G1",
    "%FF%FE",
    "%ED%A0%80",  # an encoded surrogate: invalid UTF-8
    "%C0%AF",  # overlong '/'
    "%2e%2e",
    "..%2F..%2F",
    "%E2%80%AE",
    "%20",
    "+",
    "~",
    "A" * 5000,
    "%41" * 2000,
    "arn%3Aaws%3Abedrock-agentcore%3Aus-west-2%3A123456789012%3Aruntime%2F",
    "arn:aws:bedrock-agentcore:us-west-2:123456789012:runtime%2Fx%2F..%2F..",
)

QUERY_TRICKS: tuple[str, ...] = (
    "qualifier=%00",
    "qualifier=&qualifier=DEFAULT",
    "maxResults=-1",
    "maxResults=99999999999999999999",
    "maxResults=abc",
    "nextToken=%FF%FE",
    "nextToken=" + "A" * 5000,
    "accountId=12345678901x",
    "accountId=%E2%80%AE",
    "tagKeys=&tagKeys=%00",
    "clientToken=x",
    "list-type=2&max-keys=-5",
    "continuation-token=%%%",
    "uploads&uploadId=..%2F..",
    "partNumber=0&uploadId=x",
    "partNumber=99999999999999999999&uploadId=x",
    "versionId=..%2F..%2Fcredentials",
    "a" * 3000 + "=1",
)

MALFORMED_BODIES: tuple[bytes, ...] = (
    b"{",
    b'{"a":',
    b"[]",
    b"null",
    b"0",
    b'"just a string"',
    b"\xff\xfe\x00{",
    b'{"a":1}garbage',
    b'{"a":NaN,"b":Infinity,"c":-Infinity}',
    b'{"a":1e999999}',
    b'{"a":' + b"9" * 5000 + b"}",
    b'{"dup":1,"dup":"x"}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 5000 + b"1" + b"}" * 5000,
    b'{"\\ud800":"\\udfff"}',
    b"\x00" * 64,
    b'{"a":"\x00\x01\x02"}',
    b"<xml/>",
    b"",
)

# Headers a client can send whatever the operation: odd content types, AWS-looking junk, long values.
HEADER_TRICKS: tuple[tuple[str, str], ...] = (
    ("Content-Type", "application/x-amz-json-1.1"),
    ("Content-Type", "text/plain; charset=utf-16"),
    ("Content-Type", "multipart/form-data; boundary=" + "-" * 70),
    ("Content-Encoding", "gzip"),
    ("X-Amz-Target", "AmazonBedrockAgentCore.CreateAgentRuntime"),
    ("X-Amzn-Bedrock-AgentCore-Runtime-Session-Id", "short"),
    ("X-Amzn-Bedrock-AgentCore-Runtime-Session-Id", "s" * 300),
    ("X-Amzn-Bedrock-AgentCore-Runtime-Session-Id", "é" * 40),
    ("Accept", "*/*;q=" + "9" * 100),
    ("X-Amz-Content-Sha256", "0" * 64),
    ("X-Amz-Security-Token", "A" * 4000),
    ("Range", "bytes=99999999999999999999-"),
    ("Range", "bytes=5-1"),
    ("Content-MD5", "not-base64"),
    ("x-amz-checksum-crc32", "AAAAAA=="),
    ("x-amzn-bedrock-agentcore-runtime-custom-x", "v" * 8000),
    ("Mcp-Session-Id", "\u202e"),
    ("baggage", "k=" + "v" * 9000),
)

MUTATIONS: tuple[str, ...] = (
    "none",
    "none",
    "malformed_body",
    "wrong_type",
    "missing_required",
    "huge_value",
    "uri_trick",
    "query_trick",
    "header_trick",
)


@dataclass(frozen=True)
class WireRequest:
    """One HTTP request before signing: everything in it is sent exactly as written."""

    method: str
    path: str  # percent-encoded, ASCII
    query: str = ""  # percent-encoded, ASCII, without '?'
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    mutation: str = "none"
    extras: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Seeds:
    """Real resources on the server under test: drawn in place of generated ids so handlers go past lookups."""

    uri_values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    header_values: dict[str, tuple[str, ...]] = field(default_factory=dict)  # e.g. a few fixed session ids


# -- values from shapes ----------------------------------------------------------------------------------------


def _limits(shape: Shape) -> tuple[int, int | None]:
    meta = shape.metadata
    return int(meta.get("min", 0)), (int(meta["max"]) if "max" in meta else None)


def _pattern_strategy(pattern: str) -> st.SearchStrategy[str] | None:
    """AWS patterns are Java regexes; the ones Python can read become generators, the rest are ignored."""
    try:
        re.compile(pattern)
        strategy = st.from_regex(pattern, fullmatch=True)
        strategy.validate()
    except Exception:
        return None
    return strategy


def _text(shape: Shape) -> st.SearchStrategy[str]:
    if shape.enum:
        return st.sampled_from(list(shape.enum))
    low, high = _limits(shape)
    ordinary_high = max(low, min(high if high is not None else SMALL, SMALL))
    plain = st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=low, max_size=ordinary_high
    )
    ascii_ = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=low, max_size=ordinary_high)
    pattern = shape.metadata.get("pattern")
    patterned = _pattern_strategy(pattern) if pattern else None
    if patterned is None:
        return st.one_of(ascii_, plain)
    top = high if high is not None else 10**9
    valid = patterned.filter(lambda s: low <= len(s) <= top)
    return st.one_of(valid, valid, ascii_, plain)  # mostly valid, so whole requests get past validation


def _edge_text(shape: Shape) -> st.SearchStrategy[str]:
    """Just over and far over the limits, just under the minimum, unicode and injection classics, bad enums."""
    low, high = _limits(shape)
    edges = list(HOSTILE_TEXT)
    if high is not None:
        edges += ["a" * (high + 1), "\u00e9" * (high + 1), "a" * min(max(high * 100, 4096), BIG)]
    if low > 0:
        edges.append("a" * (low - 1))
    if shape.enum:
        edges += [shape.enum[0].lower(), shape.enum[0] + " ", "NOT_A_MEMBER"]
    return st.sampled_from(edges)


def _integer(shape: Shape, edge: bool) -> st.SearchStrategy[int]:
    meta = shape.metadata
    low = int(meta.get("min", -(2**31)))
    high = int(meta.get("max", 2**31 - 1))
    valid = st.integers(min_value=low, max_value=max(low, high))
    if not edge:
        return valid
    return st.one_of(valid, st.sampled_from([low - 1, high + 1, -(2**63) - 1, 2**63, 10**30, 0, -1]))


def values(shape: Shape, *, edge: bool = False, depth: int = 0) -> st.SearchStrategy[Any]:
    """Parameters for ``shape`` as boto3 would accept them (``edge`` mixes in out-of-limit values)."""
    kind = shape.type_name
    if kind == "string":
        return st.one_of(_text(shape), _edge_text(shape)) if edge else _text(shape)
    if kind in ("integer", "long"):
        return _integer(shape, edge)
    if kind == "boolean":
        return st.booleans()
    if kind in ("float", "double"):
        return st.floats(allow_nan=False, allow_infinity=False, width=32)
    if kind == "timestamp":
        return st.datetimes()
    if kind == "blob":
        return st.binary(max_size=64)
    if kind == "list":
        low, high = _limits(shape)
        top = max(low, min(high if high is not None else 3, 3))
        return st.lists(values(shape.member, edge=edge, depth=depth + 1), min_size=low, max_size=top)
    if kind == "map":
        return st.dictionaries(
            values(shape.key, edge=edge, depth=depth + 1), values(shape.value, edge=edge, depth=depth + 1), max_size=3
        )
    if kind == "structure":
        return _structure(shape, edge, depth)
    return st.none()


def _document() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    return st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner)
    )


def _structure(shape: Shape, edge: bool, depth: int) -> st.SearchStrategy[dict[str, Any]]:
    if shape.metadata.get("document"):
        return _document()
    members = shape.members
    if shape.metadata.get("union"):
        if not members or depth >= MAX_DEPTH + 2:
            return st.just({})
        return st.one_of(
            [st.fixed_dictionaries({n: values(m, edge=edge, depth=depth + 1)}) for n, m in members.items()]
        )
    required = {n: values(members[n], edge=edge, depth=depth + 1) for n in shape.required_members if n in members}
    if depth >= MAX_DEPTH:
        return st.fixed_dictionaries(required)
    optional = {
        n: values(m, edge=edge, depth=depth + 1)
        for n, m in members.items()
        if n not in required and not m.metadata.get("eventstream") and not m.metadata.get("streaming")
    }
    return st.fixed_dictionaries(required, optional=optional)


# -- the wire request --------------------------------------------------------------------------------------


def serialize(model: OperationModel, params: dict[str, Any]) -> WireRequest:
    """Lay ``params`` out exactly as botocore would send them (rest-json or rest-xml)."""
    serializer = create_serializer(model.metadata["protocol"], include_validation=False)
    request = serializer.serialize_to_request(params, model)
    query = request["query_string"]
    if isinstance(query, dict):
        from botocore.utils import percent_encode_sequence

        query = percent_encode_sequence(query)
    path = request["url_path"]
    if "?" in path:  # static query parts of the requestUri (S3's "?list-type=2", "?uploads")
        path, static = path.split("?", 1)
        query = "&".join(p for p in (static, query) if p)
    body = request["body"]
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, bytes):
        body = bytes(body or b"")
    headers = tuple(
        (name, _header_safe(str(value)))
        for name, value in request["headers"].items()
        if _TOKEN.fullmatch(name) and name.lower() not in _FRAMING
    )
    return WireRequest(method=request["method"], path=path, query=query, headers=headers, body=body)


def _located(model: OperationModel, where: str) -> dict[str, str]:
    """Input member name → wire name, for members in ``where`` (uri, querystring, header)."""
    shape = model.input_shape
    if shape is None:
        return {}
    return {
        name: member.serialization.get("name", name)
        for name, member in shape.members.items()
        if member.serialization.get("location") == where
    }


@st.composite
def wire_requests(draw: st.DrawFn, model: OperationModel, seeds: Seeds) -> WireRequest:
    """One request for ``model``'s operation: model-shaped, then possibly made hostile."""
    shape = model.input_shape
    edge = draw(st.booleans())
    params: dict[str, Any] = draw(values(shape, edge=edge)) if shape is not None else {}
    for name, wire_name in _located(model, "uri").items():
        known = seeds.uri_values.get(wire_name, ())
        if known and draw(st.integers(0, 2)) > 0:
            params[name] = draw(st.sampled_from(known))
        elif not params.get(name):
            params[name] = draw(st.sampled_from(("x", "abc-1234567890", *INVALID_ARNS[:3])))
    for name, wire_name in _located(model, "header").items():
        known = seeds.header_values.get(wire_name, ())
        if known and draw(st.integers(0, 3)) > 0:
            params[name] = draw(st.sampled_from(known))
        if isinstance(params.get(name), str):
            params[name] = _header_safe(params[name])
    for name in (*_located(model, "uri"), *_located(model, "querystring")):
        if name in params:
            params[name] = _url_safe(params[name])
    wire = serialize(model, params)
    mutation = draw(st.sampled_from(MUTATIONS))
    return replace(_mutate(draw, model, wire, mutation), mutation=mutation)


# A header name is an RFC 9110 token; framing headers are the client library's (a false one cannot be sent at all).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FRAMING = frozenset({"content-length", "transfer-encoding", "host", "connection"})


def _url_safe(value: Any) -> Any:
    """What a URL can carry: UTF-8 (a lone surrogate has no encoding; the client would refuse to send it), and
    short enough for httpx's URL limit. Lists (repeated query parameters) item by item."""
    if isinstance(value, list):
        return [_url_safe(item) for item in value]
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")[:URL_VALUE_CAP]
    return value


def _header_safe(value: str) -> str:
    """HTTP/1.1 cannot carry control characters, lone surrogates or edge whitespace in a header value: the client
    library refuses them, so they are dropped (the server's own parser is not what this fuzzes)."""
    value = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return "".join(ch for ch in value if ch >= " " and ch != "\x7f")[:8192].strip(" \t")


def _mutate(draw: st.DrawFn, model: OperationModel, wire: WireRequest, mutation: str) -> WireRequest:
    if mutation == "malformed_body":
        return replace(wire, body=draw(st.sampled_from(MALFORMED_BODIES)))
    if mutation == "wrong_type":
        return _wrong_type(draw, wire)
    if mutation == "missing_required":
        return _missing_required(draw, model, wire)
    if mutation == "huge_value":
        return _huge(draw, wire)
    if mutation == "uri_trick":
        segments = wire.path.split("/")
        candidates = [i for i, seg in enumerate(segments) if seg] or [len(segments) - 1]
        index = draw(st.sampled_from(candidates))
        segments[index] = draw(st.sampled_from(URI_TRICKS))
        return replace(wire, path="/".join(segments))
    if mutation == "query_trick":
        extra = draw(st.sampled_from(QUERY_TRICKS))
        return replace(wire, query="&".join(p for p in (wire.query, extra) if p))
    if mutation == "header_trick":
        name, value = draw(st.sampled_from(HEADER_TRICKS))
        kept = tuple(h for h in wire.headers if h[0].lower() != name.lower())
        return replace(wire, headers=(*kept, (name, value)))
    return wire


def _json_body(wire: WireRequest) -> dict[str, Any] | None:
    try:
        document = json.loads(wire.body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


WRONG_TYPES: tuple[Any, ...] = (None, 0, -1, 1.5, True, "", "s", [], [None], {}, {"": None}, 2**70, [[[[]]]])


def _wrong_type(draw: st.DrawFn, wire: WireRequest) -> WireRequest:
    """Replace one member (at any depth) of the JSON body with a value of another type."""
    document = _json_body(wire)
    if not document:
        return replace(wire, body=json.dumps({"unexpected": draw(st.sampled_from(WRONG_TYPES))}).encode())
    holders: list[tuple[dict[str, Any] | list[Any], Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                holders.append((node, key))
                walk(value)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                holders.append((node, index))
                walk(value)

    walk(document)
    holder, key = draw(st.sampled_from(holders))
    original = holder[key]
    holder[key] = draw(st.sampled_from([v for v in WRONG_TYPES if type(v) is not type(original)]))
    return replace(wire, body=json.dumps(document).encode())


def _missing_required(draw: st.DrawFn, model: OperationModel, wire: WireRequest) -> WireRequest:
    """Drop one required member from wherever it travels (body, header or query)."""
    shape = model.input_shape
    required = [n for n in (shape.required_members if shape is not None else []) if n in shape.members]
    droppable = [n for n in required if shape.members[n].serialization.get("location") != "uri"]
    if not droppable:
        return replace(wire, body=b"{}" if wire.body.startswith(b"{") else b"")
    name = draw(st.sampled_from(droppable))
    member = shape.members[name]
    where = member.serialization.get("location")
    wire_name = member.serialization.get("name", name)
    if where == "header":
        return replace(wire, headers=tuple(h for h in wire.headers if h[0].lower() != wire_name.lower()))
    if where == "querystring":
        kept = [p for p in wire.query.split("&") if p and p.split("=", 1)[0] != wire_name]
        return replace(wire, query="&".join(kept))
    if shape.serialization.get("payload") == name:
        return replace(wire, body=b"")
    document = _json_body(wire)
    if document is not None:
        document.pop(wire_name, None)
        return replace(wire, body=json.dumps(document).encode())
    return wire


def _huge(draw: st.DrawFn, wire: WireRequest) -> WireRequest:
    """One member far over any limit, a huge list, or a deep structure (each well under the 10 MB body cap)."""
    document = _json_body(wire) or {}
    key = draw(st.sampled_from([*document.keys(), "description", "agentRuntimeName", "tags"]))
    document[key] = draw(
        st.sampled_from(
            (
                "A" * BIG,
                "\U0001f600" * (BIG // 4),
                ["x"] * 100_000,
                {f"k{i}": "v" for i in range(20_000)},
                2**4000,
            )
        )
    )
    return replace(wire, body=json.dumps(document).encode())
