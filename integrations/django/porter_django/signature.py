"""Verifying porter's request signature (docs/reference/signature.md).

porter signs every request it generates with HMAC-SHA256 over the lines ``timestamp``,
``nonce``, ``METHOD``, ``Host``, the request target, ``Content-Type`` and the body's
SHA-256, and names the key in ``X-Porter-Key-Id``. Verifiers hold a list of keys, so a
key can be rotated without restarting porter and every worker at once.
"""

import hashlib
import hmac
import logging
import re
import time

from django.core.cache import caches
from django.core.exceptions import PermissionDenied
from django.utils.encoding import escape_uri_path

from . import conf

log = logging.getLogger("porter_django")

KEY_ID = "HTTP_X_PORTER_KEY_ID"
HEADERS = ("HTTP_X_PORTER_TIMESTAMP", "HTTP_X_PORTER_NONCE", "HTTP_X_PORTER_SIGNATURE")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_NONCE = re.compile(r"[0-9a-f]{32}")
_MAC = re.compile(r"sha256=[0-9a-f]{64}")
_QUERY_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/?%")


class Refused(PermissionDenied):
    """A request porter did not sign (403). ``reason`` is the shared vectors' code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def key_id(key: bytes) -> str:
    """A key's public name: the first 16 hex digits of HMAC-SHA256(key, "porter-key-id")."""
    return hmac.new(key, b"porter-key-id", hashlib.sha256).hexdigest()[:16]


def carries_signature(request) -> bool:
    return KEY_ID in request.META or any(h in request.META for h in HEADERS)


def canonical_query(query: str) -> str:
    """The query as porter signs it: every byte outside ``A-Za-z0-9`` and
    ``-._~!$&'()*+,;=:@/?%`` as ``%XX``. Unchanged on what porter sent; rebuilds it from
    a server's decoded or re-encoded copy."""
    try:
        raw = query.encode("latin-1")
    except UnicodeEncodeError:
        raw = query.encode("utf-8")
    return "".join(chr(b) if b in _QUERY_SAFE else "%%%02X" % b for b in raw)


def target(request) -> str:
    """The request target as porter sent it: the raw one when the server keeps it
    (gunicorn's RAW_URI, uWSGI's REQUEST_URI), else rebuilt from the path and the query;
    the query in its canonical form either way."""
    raw = request.META.get("RAW_URI") or request.META.get("REQUEST_URI")
    if raw:
        path, _, query = raw.partition("?")
    else:
        path, query = escape_uri_path(request.path), request.META.get("QUERY_STRING", "")
    return path + ("?" + canonical_query(query) if query else "")


def verify(request) -> None:
    """Raises :class:`Refused` unless the request is signed by one of our keys, fresh,
    and its nonce unseen. Reads ``request.body`` (metadata requests are small)."""
    kid = request.META.get(KEY_ID, "")
    ts, nonce, sig = (request.META.get(h, "") for h in HEADERS)
    if not (kid and ts and nonce and sig):
        raise Refused("missing-signature", "porter signature missing")
    keys = {key_id(k): k for k in conf.secrets()}
    if not _KEY_ID.fullmatch(kid) or kid not in keys:
        raise Refused("unknown-key", "porter signature names an unknown key %r" % kid[:32])
    if not ts.isascii() or not ts.isdigit() or abs(time.time() - int(ts)) > conf.max_skew():
        raise Refused("stale", "porter signature is stale")
    if not _NONCE.fullmatch(nonce) or not _MAC.fullmatch(sig):
        raise Refused("bad-signature", "porter signature is malformed")
    lines = [
        ts,
        nonce,
        request.method,
        request.META.get("HTTP_HOST", ""),
        target(request),
        request.META.get("CONTENT_TYPE", ""),
        hashlib.sha256(request.body).hexdigest(),
    ]
    mac = hmac.new(keys[kid], "\n".join(lines).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest("sha256=" + mac, sig):
        raise Refused("bad-signature", "porter signature does not match")
    # Seen nonces live in a cache shared by all workers, for the whole skew window.
    if not caches[conf.cache_name()].add("porter-nonce:" + nonce, 1, 2 * conf.max_skew()):
        raise Refused("replayed", "porter nonce replayed")
