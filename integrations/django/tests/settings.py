import os
import tempfile

BASE = tempfile.mkdtemp(prefix="porter-django-test-")
SECRET_KEY = "test"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "porter_django"]
MIDDLEWARE = ["porter_django.middleware.PorterMiddleware"]
ROOT_URLCONF = "tests.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
MEDIA_ROOT = os.path.join(BASE, "media")
PORTER_SECRET = "s" * 32
PORTER_ROOTS = [os.path.join(BASE, "uploads")]
os.makedirs(PORTER_ROOTS[0], exist_ok=True)
# The tests run in one process: the per-process nonce cache is enough here.
SILENCED_SYSTEM_CHECKS = ["porter_django.W001"]
PORTER_INTERNAL = {MEDIA_ROOT: "/protected/"}
USE_TZ = True
