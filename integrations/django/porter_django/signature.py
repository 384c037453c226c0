"""Verifying porter's request signature (SPEC §4.2)."""

import hashlib
import hmac
import re
import time

from django.core.cache import caches
from django.core.exceptions import PermissionDenied

from . import conf

HEADERS = ("HTTP_X_PORTER_TIMESTAMP", "HTTP_X_PORTER_NONCE", "HTTP_X_PORTER_SIGNATURE")
_NONCE = re.compile(r"^[0-9a-f]{32}$")


def carries_signature(request) -> bool:
    return any(h in request.META for h in HEADERS)


def target(request) -> str:
    """The request target as porter sent it: the raw one when the server keeps it
    (gunicorn's RAW_URI, uWSGI's REQUEST_URI), else Django's re-encoded path."""
    raw = request.META.get("RAW_URI") or request.META.get("REQUEST_URI")
    return raw or request.get_full_path()


def verify(request) -> None:
    """Raises PermissionDenied unless the request is signed by porter, fresh, and its
    nonce unseen. Reads ``request.body`` (metadata requests are small)."""
    ts, nonce, sig = (request.META.get(h, "") for h in HEADERS)
    if not (ts and nonce and sig):
        raise PermissionDenied("porter signature missing")
    if not ts.isdigit() or abs(time.time() - int(ts)) > conf.max_skew():
        raise PermissionDenied("porter signature is stale")
    if not _NONCE.match(nonce):
        raise PermissionDenied("porter nonce is malformed")
    lines = [
        ts,
        nonce,
        request.method,
        request.META.get("HTTP_HOST", ""),
        target(request),
        request.META.get("CONTENT_TYPE", ""),
        hashlib.sha256(request.body).hexdigest(),
    ]
    mac = hmac.new(conf.secret(), "\n".join(lines).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest("sha256=" + mac, sig):
        raise PermissionDenied("porter signature does not match")
    # Seen nonces live in a cache shared by all workers, for the whole skew window.
    if not caches[conf.cache_name()].add("porter-nonce:" + nonce, 1, 2 * conf.max_skew()):
        raise PermissionDenied("porter nonce replayed")
