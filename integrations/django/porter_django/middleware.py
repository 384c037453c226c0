"""``PorterMiddleware``: porter's signed metadata becomes ``request.FILES``."""

import io
import json
import re

from django.core.exceptions import PermissionDenied
from django.http import HttpResponseForbidden, QueryDict
from django.http.multipartparser import MultiPartParser
from django.utils.datastructures import MultiValueDict

from . import conf, signature
from .files import ATTRS, PorterUploadedFile


def template_regex(template: str) -> "re.Pattern":
    """``{field}.{attr}`` → a regex naming both parts; attr is one porter sends."""
    pattern = re.escape(template)
    pattern = pattern.replace(re.escape("{field}"), r"(?P<field>.*?)")
    pattern = pattern.replace(re.escape("{attr}"), "(?P<attr>%s)" % "|".join(ATTRS))
    return re.compile("^%s$" % pattern)


class PorterMiddleware:
    """Verifies porter's signature on requests that carry its headers or metadata
    fields (403 otherwise), then replaces the metadata fields with
    ``PorterUploadedFile`` objects in ``request.FILES``. Requests without either pass
    untouched. Files the view did not move or save are deleted afterwards."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            files = self.adopt(request)
        except PermissionDenied as e:
            return HttpResponseForbidden(str(e))
        try:
            return self.get_response(request)
        finally:
            for f in files:
                f.discard()

    def adopt(self, request):
        signed = signature.carries_signature(request)
        if signed:
            # Read (and keep) the raw body before any parsing consumes the stream: the
            # signature covers its hash. Metadata requests are small.
            request.body
        elif not _may_carry_fields(request):
            return []
        data, json_files = _parse(request)
        regex = template_regex(conf.field_names())
        meta_keys = [k for k in data.keys() if regex.match(k)]
        if not signed:
            if meta_keys or json_files:
                raise PermissionDenied("porter metadata without porter's signature")
            return []
        signature.verify(request)
        files = MultiValueDict()
        adopted = []
        for field, metas in _group(data, meta_keys, regex, json_files):
            for meta in metas:
                f = PorterUploadedFile(meta)
                files.appendlist(field, f)
                adopted.append(f)
        fields = data.copy()
        for k in meta_keys:
            del fields[k]
        fields._mutable = False
        request._post = fields
        request._files = files
        return adopted


def _may_carry_fields(request) -> bool:
    return request.method in ("POST", "PUT", "PATCH")


def _parse(request):
    """The body's fields (any method), and the JSON form's file list if any."""
    ctype = request.META.get("CONTENT_TYPE", "")
    if ctype.startswith("application/json"):
        try:
            doc = json.loads(request.body or b"{}")
        except ValueError:
            return QueryDict(mutable=True), []
        fields = QueryDict(mutable=True)
        if isinstance(doc, dict):
            for name, values in (doc.get("fields") or {}).items():
                for v in values if isinstance(values, list) else [values]:
                    fields.appendlist(name, str(v))
            return fields, [f for f in doc.get("files") or [] if isinstance(f, dict)]
        return fields, []
    if request.method == "POST":
        return request.POST.copy(), []
    if ctype.startswith("multipart/form-data"):
        parser = MultiPartParser(request.META, io.BytesIO(request.body), request.upload_handlers, request.encoding)
        post, _ = parser.parse()
        return post.copy(), []
    if ctype.startswith("application/x-www-form-urlencoded"):
        return QueryDict(request.body, mutable=True, encoding=request.encoding), []
    return QueryDict(mutable=True), []


def _group(data, meta_keys, regex, json_files):
    """Per field, one dict of attributes per file, paired by position (porter sends
    every attribute for every file, in order)."""
    by_field = {}
    for k in meta_keys:
        m = regex.match(k)
        by_field.setdefault(m.group("field"), {})[m.group("attr")] = data.getlist(k)
    for field, attrs in by_field.items():
        count = max(len(v) for v in attrs.values())
        yield field, [{a: (v[i] if i < len(v) else "") for a, v in attrs.items()} for i in range(count)]
    grouped = {}
    for f in json_files:
        grouped.setdefault(str(f.get("field", "file")), []).append({k: str(v) for k, v in f.items()})
    yield from grouped.items()
