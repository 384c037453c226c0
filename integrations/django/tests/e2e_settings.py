"""Settings for the end-to-end tests: real Django under gunicorn behind the real porter
binary. The Rust test (tests/it/django.rs) passes the shared paths in the environment."""

import os

from .settings import *  # noqa: F401,F403

MEDIA_ROOT = os.environ["PORTER_E2E_MEDIA"]
PORTER_SECRET = None
PORTER_SECRET_FILE = os.environ["PORTER_E2E_SECRET_FILE"]
PORTER_INTERNAL = {MEDIA_ROOT: "/protected/"}
# One gunicorn worker: the nonce cache lives in its memory.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
