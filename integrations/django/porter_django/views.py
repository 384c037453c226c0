"""Completion views for resumable uploads: each hands the app a ``PorterUploadedFile``."""

from django.http import HttpResponse, HttpResponseBadRequest, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt


class _Completion(View):
    """Calls ``on_completion(uploaded_file, request)``; its return value is the
    response when it is one, else ``get_response_data`` becomes JSON."""

    def post(self, request, *args, **kwargs):
        files = [f for name in request.FILES for f in request.FILES.getlist(name)]
        if not files:
            return HttpResponseBadRequest("no porter upload in this request")
        result = self.on_completion(files[0], request)
        if isinstance(result, HttpResponse):
            return result
        return JsonResponse(self.get_response_data(files[0], request) or {})

    def on_completion(self, uploaded_file, request):
        """Override: save or move the file. Return a response, or None."""

    def get_response_data(self, uploaded_file, request):
        return {"message": "%s uploaded" % uploaded_file.name}


class ChunkedUploadCompleteView(_Completion):
    """Drop-in for django-chunked-upload's completion view, behind porter's `chunked`
    route (its `complete` path). Keeps Django's CSRF check: the token is a field."""


@method_decorator(csrf_exempt, name="dispatch")
class TusNotifyView(_Completion):
    """porter's tus `notify` request. CSRF-exempt: a tus upload needs a CORS preflight,
    so it cannot be forged cross-site, and the request is signed by porter."""
