import os

from django import forms
from django.core.files.storage import default_storage
from django.http import JsonResponse
from django.urls import path

import porter_django
from porter_django.views import ChunkedUploadCompleteView, TusNotifyView


class UploadForm(forms.Form):
    title = forms.CharField()
    file = forms.FileField()


def upload(request):
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return JsonResponse({"errors": form.errors}, status=400)
    f = form.cleaned_data["file"]
    before = os.stat(f.temporary_file_path()).st_ino if hasattr(f, "temporary_file_path") else None
    saved = default_storage.save("docs/" + f.name, f)
    return JsonResponse({
        "title": form.cleaned_data["title"],
        "saved": default_storage.path(saved),
        "name": saved,
        "inode_before": before,
        "inode_after": os.stat(default_storage.path(saved)).st_ino,
        "sha256": getattr(f, "sha256", ""),
        "fields": sorted(request.POST.keys()),
    })


def upload_to_s3(request):
    """The form view of an app whose default storage is porter_django's S3Storage."""
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return JsonResponse({"errors": form.errors}, status=400)
    f = form.cleaned_data["file"]
    saved = default_storage.save("docs/" + f.name, f)
    return JsonResponse({"name": saved, "size": default_storage.size(saved), "sha256": f.sha256})


def look(request):
    f = request.FILES.get("file")
    return JsonResponse({"name": f.name if f else None, "fields": sorted(request.POST.keys())})


def download(request, name):
    return porter_django.sendfile(request, default_storage.path(name), attachment=True)


class Notify(TusNotifyView):
    def on_completion(self, uploaded_file, request):
        self.saved = default_storage.save("tus/" + uploaded_file.name, uploaded_file)

    def get_response_data(self, uploaded_file, request):
        return {"saved": self.saved, "md5": uploaded_file.md5, "fields": sorted(request.POST.keys())}


class Complete(ChunkedUploadCompleteView):
    def on_completion(self, uploaded_file, request):
        self.saved = default_storage.save("chunked/" + uploaded_file.name, uploaded_file)

    def get_response_data(self, uploaded_file, request):
        return {"saved": self.saved, "sha256": uploaded_file.sha256, "fields": sorted(request.POST.keys())}


urlpatterns = [
    path("upload", upload),
    path("upload-urlencoded", upload),
    path("upload-json", upload),
    path("upload-s3", upload_to_s3),
    path("look", look),
    path("d/<path:name>", download),
    path("notify", Notify.as_view()),
    path("api/chunked_upload_complete/", Complete.as_view()),
]
