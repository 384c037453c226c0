"""Settings for the end-to-end tests: real Django under gunicorn behind the real porter
binary. The Rust test (tests/it/django.rs) passes the shared paths in the environment."""

import os

from .settings import *  # noqa: F401,F403

MEDIA_ROOT = os.environ["PORTER_E2E_MEDIA"]
PORTER_SECRET = None
PORTER_SECRET_FILE = os.environ["PORTER_E2E_SECRET_FILE"]
PORTER_INTERNAL = {MEDIA_ROOT: "/protected/"}
# porter's storage.root (tests/it/django.rs links it here once porter has started).
PORTER_ROOTS = [os.environ["PORTER_E2E_ROOTS"]] if os.environ.get("PORTER_E2E_ROOTS") else None
# One gunicorn worker: the nonce cache lives in its memory.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# With S3 (tests/it/django.rs sets these): the default storage is porter_django's
# S3Storage on the same Garage bucket porter uploads to.
if os.environ.get("PORTER_E2E_S3_ENDPOINT"):
    STORAGES = {
        "default": {
            "BACKEND": "porter_django.storage.S3Storage",
            "OPTIONS": {
                "bucket_name": os.environ["PORTER_E2E_S3_BUCKET"],
                "endpoint_url": os.environ["PORTER_E2E_S3_ENDPOINT"],
                "access_key": os.environ["PORTER_E2E_S3_KEY_ID"],
                "secret_key": os.environ["PORTER_E2E_S3_SECRET"],
                "region_name": "garage",
                "addressing_style": "path",
                "signature_version": "s3v4",
                "location": os.environ["PORTER_E2E_S3_LOCATION"],
                "file_overwrite": False,
            },
        },
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
