"""Settings of the example app. Paths come from the environment (scripts/demo and the
tests set them) so porter's storage and MEDIA_ROOT share one filesystem."""

import os

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAR = os.environ.get("EXAMPLE_VAR", os.path.join(HERE, "var"))

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.contenttypes", "porter_django", "files"]
MIDDLEWARE = [
    "porter_django.middleware.PorterMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "example.urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(VAR, "db.sqlite3")}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                      "LOCATION": os.path.join(VAR, "cache")}}
MEDIA_ROOT = os.path.join(VAR, "media")
USE_TZ = True

# porter
PORTER_SECRET_FILE = os.environ.get("PORTER_SECRET_FILE", os.path.join(VAR, "secret"))
PORTER_INTERNAL = {MEDIA_ROOT: "/protected/"}
# porter's storage.root (porter.toml): a signed file path anywhere else is refused.
PORTER_ROOTS = [os.environ.get("EXAMPLE_PORTER_ROOTS", os.path.join(VAR, "porter", "uploads"))]

# What the upload view accepts (by extension), as legacy upload views do.
ACCEPTED_FILE_FORMATS = [".txt", ".csv", ".pdf", ".png", ".jpg", ".jpeg", ".bin", ".zip", ".mp4"]
