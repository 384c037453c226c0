"""The package's settings, read when used (so tests can override them)."""

import os

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _key(value) -> bytes:
    """A key as porter reads its secret file: the bytes as they are (not hex-decoded),
    one trailing newline stripped, at least 32 bytes."""
    if isinstance(value, str):
        value = value.encode()
    if value.endswith(b"\n"):
        value = value[:-1]
    if len(value) < 32:
        raise ImproperlyConfigured("a porter secret must be at least 32 bytes")
    return value


def secrets() -> list:
    """Every key a signature may be made with: ``PORTER_SECRET`` (str or bytes, or a
    list of them), else the files of ``PORTER_SECRET_FILE`` (a path or a list). A list
    holds the current key and the one being rotated out (docs/reference/signature.md)."""
    value = getattr(settings, "PORTER_SECRET", None)
    if value is None:
        value = _read_files(getattr(settings, "PORTER_SECRET_FILE", None))
    keys = [_key(v) for v in _as_list(value)]
    if not keys:
        raise ImproperlyConfigured("PORTER_SECRET holds no key")
    return keys


def _read_files(paths) -> list:
    """The keys in ``PORTER_SECRET_FILE``. In a list, a file that does not exist is
    skipped (``secret.old`` between rotations); one that cannot be read is an error."""
    if paths is None:
        raise ImproperlyConfigured("set PORTER_SECRET or PORTER_SECRET_FILE")
    paths = _as_list(paths)
    keys = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                keys.append(f.read())
        except FileNotFoundError:
            if len(paths) == 1:
                raise ImproperlyConfigured("the porter secret %s does not exist" % path) from None
        except OSError as e:
            raise ImproperlyConfigured("cannot read the porter secret %s: %s" % (path, e)) from None
    if not keys:
        raise ImproperlyConfigured("none of the porter secrets in PORTER_SECRET_FILE exists")
    return keys


def secret() -> bytes:
    """The first key (the current one)."""
    return secrets()[0]


def field_names() -> str:
    return getattr(settings, "PORTER_FIELD_NAMES", "{field}.{attr}")


def max_skew() -> int:
    return int(getattr(settings, "PORTER_MAX_SKEW", 300))


def cache_name() -> str:
    return getattr(settings, "PORTER_CACHE", "default")


def sendfile_enabled() -> bool:
    return bool(getattr(settings, "PORTER_SENDFILE", not settings.DEBUG))


def internal() -> dict:
    return dict(getattr(settings, "PORTER_INTERNAL", {}))


def roots():
    """``PORTER_ROOTS``: the directories porter stores files in (its ``storage.root``),
    resolved; ``None`` when unset. A ``file.path`` outside them is refused."""
    value = getattr(settings, "PORTER_ROOTS", None)
    if value is None:
        return None
    return [os.path.realpath(r) for r in _as_list(value)]
