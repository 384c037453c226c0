"""Django receiving uploads itself, as an app does without porter: the default upload
handlers (small files in memory, larger ones in FILE_UPLOAD_TEMP_DIR), then the default
storage saves the file under MEDIA_ROOT (a rename, same filesystem). Served by gunicorn:

    BENCH_MEDIA_ROOT=... BENCH_UPLOAD_TEMP=... gunicorn django_peer:application

POST /upload saves the file; POST /upload-hashed also computes its md5 and sha256, the
way an app that needs them must: by reading the file again after the upload.
"""

import hashlib
import os
import uuid

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="porter-bench",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    MEDIA_ROOT=os.environ["BENCH_MEDIA_ROOT"],
    FILE_UPLOAD_TEMP_DIR=os.environ["BENCH_UPLOAD_TEMP"],
)

from django.core.files.storage import default_storage  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def save(request, hashed):
    upload = request.FILES.get("file")
    if upload is None:
        return JsonResponse({"error": "no file"}, status=400)
    answer = {"size": upload.size}
    if hashed:
        md5, sha256 = hashlib.md5(), hashlib.sha256()
        for chunk in upload.chunks(256 * 1024):
            md5.update(chunk)
            sha256.update(chunk)
        answer.update(md5=md5.hexdigest(), sha256=sha256.hexdigest())
    # A unique name, as apps' upload_to callables do: with one name for all, Django's
    # FileSystemStorage loses files when two uploads save at once (the benchmark's
    # byte check caught it: the existence check and the rename are not atomic).
    name = "uploads/%s-%s" % (uuid.uuid4().hex, upload.name)
    answer["name"] = default_storage.save(name, upload)
    return JsonResponse(answer)


urlpatterns = [
    path("upload", lambda request: save(request, hashed=False)),
    path("upload-hashed", lambda request: save(request, hashed=True)),
]

application = get_wsgi_application()
