"""A catch-all view for the shared vectors: echoes what the middleware handed over."""

from django.http import JsonResponse
from django.urls import re_path


def echo(request):
    files = []
    for field in request.FILES:
        for f in request.FILES.getlist(field):
            meta = {"field": field, "name": f.name, "path": f.porter_path, "size": str(f.size), "id": f.porter_id}
            meta.update({"key": f.porter_key, "bucket": f.porter_bucket, "md5": f.md5, "sha256": f.sha256})
            meta.update({"content_type": f.content_type, "detected_type": f.detected_type})
            files.append(meta)
    fields = {k: request.POST.getlist(k) for k in request.POST}
    return JsonResponse({"fields": fields, "files": files})


urlpatterns = [re_path(r"^.*$", echo)]
