"""The upload views a legacy app has (docs/reference/errors.md's answer shape), unchanged by porter:
porter_django turns porter's metadata into request.FILES, and downloads go out by
X-Accel-Redirect. Files belong to an upload handle (the wizard's first step), sent as
the X-Upload-Handle header (or the `upload_handle` cookie, for download links)."""

import os

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

import porter_django
from porter_django.views import TusNotifyView

from .models import Handle, StoredFile


class StoredFileForm(forms.ModelForm):
    class Meta:
        model = StoredFile
        fields = ["file"]


def answer(accepted, status=200, error=None, verbose_error=None, file=None, url=None):
    body = {"accepted": accepted, "error": error, "verbose_error": verbose_error, "file": file, "url": url}
    return JsonResponse(body, status=status)


def current_handle(request, value=None):
    value = value or request.headers.get("X-Upload-Handle") or request.COOKIES.get("upload_handle")
    try:
        return Handle.objects.get(id=value) if value else None
    except (Handle.DoesNotExist, ValidationError, ValueError):
        return None


def page(request):
    return render(request, "files/page.html")


@csrf_exempt
def new_handle(request):
    if request.method != "POST":
        return HttpResponse(status=405)
    handle = Handle.objects.create()
    resp = JsonResponse({"handle": str(handle.id)}, status=201)
    resp.set_cookie("upload_handle", str(handle.id), samesite="Strict", httponly=True)
    return resp


def store(handle, uploaded):
    """Checks the format and keeps the file; a refusal is 415 (porter then deletes it)."""
    name = os.path.basename(uploaded.name)
    if os.path.splitext(name)[1].lower() not in settings.ACCEPTED_FILE_FORMATS:
        return answer(False, 415, "unsupported_type", "%s is not an accepted format" % name, name)
    for old in StoredFile.objects.filter(handle=handle, name=name):
        old.file.delete(save=False)
        old.delete()
    form = StoredFileForm(files={"file": uploaded})
    if not form.is_valid():
        return answer(False, 400, "bad_request", form.errors.as_text(), name)
    sf = form.save(commit=False)
    sf.handle, sf.name, sf.size = handle, name, uploaded.size
    sf.sha256 = getattr(uploaded, "sha256", "")
    sf.save()  # FileField: a rename of porter's file (same filesystem)
    return answer(True, file=name, url="/f/%s" % sf.uuid)


@csrf_exempt
def upload(request):
    handle = current_handle(request)
    if handle is None:
        return answer(False, 403, "no_handle", "start an upload session first")
    if request.method == "GET":
        files = [
            {"name": f.name, "size": f.size, "sha256": f.sha256, "url": "/f/%s" % f.uuid}
            for f in handle.files.order_by("name")
        ]
        return JsonResponse({"files": files})
    if request.method != "POST":
        return HttpResponse(status=405)
    uploaded = request.FILES.get("file")
    if uploaded is None:
        return answer(False, 400, "bad_request", "no file in the request")
    return store(handle, uploaded)


@csrf_exempt
def by_name(request, name):
    handle = current_handle(request)
    sf = StoredFile.objects.filter(handle=handle, name=name).first() if handle else None
    if sf is None:
        return answer(False, 404, "not_found", "no such file", name)
    if request.method == "DELETE":
        sf.file.delete(save=False)
        sf.delete()
        return HttpResponse(status=204)
    return porter_django.sendfile(request, sf.file, attachment=True, filename=sf.name)


def by_uuid(request, uuid):
    handle = current_handle(request)
    sf = StoredFile.objects.filter(handle=handle, uuid=uuid).first() if handle else None
    if sf is None:
        return answer(False, 404, "not_found", "no such file")
    return porter_django.sendfile(request, sf.file, attachment=True, filename=sf.name)


class TusDone(TusNotifyView):
    """porter's notify for the page's tus uploads: the handle is in Upload-Metadata."""

    def on_completion(self, uploaded_file, request):
        handle = current_handle(request, request.POST.get("handle"))
        if handle is None:
            return answer(False, 403, "no_handle", "unknown upload handle")
        return store(handle, uploaded_file)
