"""The package's settings, read when used (so tests can override them)."""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def secret() -> bytes:
    """``PORTER_SECRET`` (str or bytes), else the contents of ``PORTER_SECRET_FILE``.

    As porter does: one trailing newline is stripped, and at least 32 bytes are needed.
    """
    value = getattr(settings, "PORTER_SECRET", None)
    if value is None:
        path = getattr(settings, "PORTER_SECRET_FILE", None)
        if path is None:
            raise ImproperlyConfigured("set PORTER_SECRET or PORTER_SECRET_FILE")
        with open(path, "rb") as f:
            value = f.read()
    if isinstance(value, str):
        value = value.encode()
    if value.endswith(b"\n"):
        value = value[:-1]
    if len(value) < 32:
        raise ImproperlyConfigured("the porter secret must be at least 32 bytes")
    return value


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
