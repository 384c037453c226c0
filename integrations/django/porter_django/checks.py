"""System checks (``manage.py check``) for settings that quietly weaken porter's
guarantees: each one is something a deployment works without, until it is attacked."""

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from . import conf

_PER_PROCESS = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


@checks.register(checks.Tags.security)
def porter_settings(app_configs=None, **kwargs):
    return _secret() + _cache() + _roots() + _sendfile()


def _secret():
    try:
        conf.secrets()
    except ImproperlyConfigured as e:
        return [
            checks.Error(
                "porter's signing secret cannot be used: %s" % e,
                hint="Point PORTER_SECRET_FILE at porter's backend.secret_file, readable by the app's user.",
                id="porter_django.E001",
            )
        ]
    return []


def _cache():
    alias = conf.cache_name()
    caches = getattr(settings, "CACHES", {})
    if alias not in caches:
        return [
            checks.Error(
                "PORTER_CACHE names the cache %r, which CACHES does not define." % alias,
                id="porter_django.E002",
            )
        ]
    backend = caches[alias].get("BACKEND", "")
    if backend == "django.core.cache.backends.dummy.DummyCache":
        return [
            checks.Error(
                "PORTER_CACHE %r is a DummyCache: seen nonces are never remembered, so any signed request can be replayed."
                % alias,
                hint="Use a cache every worker shares (Redis, Memcached, the database).",
                id="porter_django.E003",
            )
        ]
    if backend in _PER_PROCESS:
        return [
            checks.Warning(
                "PORTER_CACHE %r lives in one process's memory: with several worker processes a signed request can be replayed once per worker."
                % alias,
                hint="Use a cache every worker shares (Redis, Memcached, the database), or run a single worker process.",
                id="porter_django.W001",
            )
        ]
    return []


def _roots():
    if getattr(settings, "PORTER_ROOTS", None) is None:
        return [
            checks.Warning(
                "PORTER_ROOTS is not set: a signed file path is trusted wherever it points.",
                hint="Set PORTER_ROOTS to porter's storage.root, e.g. ['/var/lib/porter/uploads'].",
                id="porter_django.W002",
            )
        ]
    return []


def _sendfile():
    if not settings.DEBUG and not conf.sendfile_enabled():
        return [
            checks.Warning(
                "PORTER_SENDFILE is off while DEBUG is off: porter_django.sendfile streams files through Django's workers.",
                hint="Remove PORTER_SENDFILE = False so porter serves downloads (X-Accel-Redirect).",
                id="porter_django.W003",
            )
        ]
    return []
