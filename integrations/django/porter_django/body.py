"""porter's metadata bodies, parsed by this package's own code from the signed bytes.

porter writes exactly three formats (``forward`` in its config). Reading them here,
instead of through ``request.POST``, means the names the app gets are the names porter
signed: no parser strips, unescapes or rewrites them on the way. Anything that is not
porter's format is refused rather than guessed at.
"""

import json
import re
from urllib.parse import unquote_to_bytes

_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=?]{1,70}")
_DISPOSITION = b'\r\nContent-Disposition: form-data; name="'


class Malformed(ValueError):
    """The body is not in the format its Content-Type names."""


def parse(content_type: str, body: bytes):
    """``(fields, files)``: the fields as ``(name, value)`` pairs in order, and for the
    json format its list of file dicts (``None`` for the other formats, where files are
    named fields). A body of no porter format has no fields."""
    kind, _, params = content_type.partition(";")
    kind = kind.strip().lower()
    if kind == "multipart/form-data":
        return _multipart(params, body), None
    if kind == "application/x-www-form-urlencoded":
        return _urlencoded(body), None
    if kind == "application/json":
        return _json(body)
    return [], None


def _multipart(params: str, body: bytes):
    key, _, boundary = params.strip().partition("=")
    if key.strip().lower() != "boundary" or not _BOUNDARY.fullmatch(boundary):
        raise Malformed("no valid boundary")
    delimiter = b"\r\n--" + boundary.encode()
    chunks = (b"\r\n" + body).split(delimiter)
    if chunks[0] != b"" or chunks[-1] not in (b"--\r\n", b"--"):
        raise Malformed("not porter's multipart framing")
    fields = []
    for chunk in chunks[1:-1]:
        if not chunk.startswith(_DISPOSITION):
            raise Malformed("a part that is not a plain named field")
        head_end = chunk.find(b'"\r\n\r\n', len(_DISPOSITION))
        if head_end < 0:
            raise Malformed("a part without its blank line")
        name = chunk[len(_DISPOSITION) : head_end]
        if b'"' in name or b"\r" in name or b"\n" in name:
            raise Malformed("a part with more than a name")
        fields.append((_text(name, strict=True), _text(chunk[head_end + 5 :])))
    return fields


def _urlencoded(body: bytes):
    fields = []
    if not body:
        return fields
    for pair in body.split(b"&"):
        name, eq, value = pair.partition(b"=")
        if not eq:
            raise Malformed("a pair without '='")
        fields.append((_form_decode(name, strict=True), _form_decode(value)))
    return fields


def _form_decode(raw: bytes, strict=False) -> str:
    return _text(unquote_to_bytes(raw.replace(b"+", b" ")), strict)


def _text(raw: bytes, strict=False) -> str:
    try:
        return raw.decode("utf-8", "strict" if strict else "replace")
    except UnicodeDecodeError:
        raise Malformed("a name that is not UTF-8") from None


def _unique(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise Malformed("a JSON object names a key twice")
    return dict(pairs)


def _json(body: bytes):
    try:
        doc = json.loads(body, object_pairs_hook=_unique)
    except ValueError:
        raise Malformed("not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"fields", "files"}:
        raise Malformed("not porter's JSON shape")
    raw_fields, raw_files = doc["fields"], doc["files"]
    if not isinstance(raw_fields, dict) or not isinstance(raw_files, list):
        raise Malformed("not porter's JSON shape")
    fields = []
    for name, values in raw_fields.items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise Malformed("a field whose values are not strings")
        fields.extend((name, v) for v in values)
    files = []
    for f in raw_files:
        if not isinstance(f, dict) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in f.values()):
            raise Malformed("a file that is not an object of strings")
        files.append({k: str(v) for k, v in f.items()})
    return fields, files
