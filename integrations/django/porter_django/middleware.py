"""``PorterMiddleware``: porter's signed metadata becomes ``request.FILES``.

The metadata is read only from the signed bytes, by this package's own parser
(:mod:`porter_django.body`), with exact names (:mod:`porter_django.names`); never from
``request.POST``, whose parser strips and rewrites names. A signed request whose client
fields could be mistaken for its metadata is refused rather than guessed at, and with
``PORTER_ROOTS`` set a file outside porter's storage is refused even when signed.
"""

import io
import json
import logging
import os
import stat

from django.core.exceptions import PermissionDenied
from django.http import HttpResponseBadRequest, HttpResponseForbidden, QueryDict
from django.http.multipartparser import MultiPartParser
from django.utils.datastructures import MultiValueDict

from . import body, conf, names, signature
from .files import PorterUploadedFile

log = logging.getLogger("porter_django")


class BadMetadata(ValueError):
    """A signed request whose fields cannot be read unambiguously (400)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Outside(PermissionDenied):
    """A signed ``file.path`` that is not a regular file under ``PORTER_ROOTS`` (403)."""

    reason = "outside-roots"


def template_regex(template: str):
    """Kept for apps that used it: the compiled exact reader of a template."""
    return names.Template(template)._regex


class PorterMiddleware:
    """Verifies porter's signature on requests that carry its headers or metadata
    fields (403 otherwise), then replaces the metadata fields with
    ``PorterUploadedFile`` objects in ``request.FILES``. Requests without either pass
    untouched. Files the view did not move or save are deleted afterwards."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            files = adopt(request)
        except (signature.Refused, Outside) as e:
            log.warning("refused a request to %s: %s (%s)", request.path, e, e.reason)
            return HttpResponseForbidden(str(e))
        except BadMetadata as e:
            log.warning("refused a request to %s: %s (%s)", request.path, e, e.reason)
            return HttpResponseBadRequest(str(e))
        try:
            return self.get_response(request)
        finally:
            for f in files:
                f.discard()


def adopt(request) -> list:
    """Checks the request and puts its files in ``request.FILES``; returns them."""
    template = names.Template(conf.field_names())
    if not signature.carries_signature(request):
        if _unsigned_metadata(request, template):
            raise signature.Refused("unsigned-metadata", "porter metadata without porter's signature")
        return []
    signature.verify(request)
    try:
        fields, json_files = body.parse(request.META.get("CONTENT_TYPE", ""), request.body)
    except body.Malformed as e:
        raise BadMetadata("malformed-body", "porter metadata body is malformed: %s" % e) from None
    client, metas = _split(fields, json_files, template)
    _check_roots(metas)
    post = QueryDict(mutable=True)
    for name, value in client:
        post.appendlist(name, value)
    post._mutable = False
    files = MultiValueDict()
    adopted = []
    for meta in metas:
        try:
            f = PorterUploadedFile(meta)
        except OSError as e:
            for done in adopted:
                done.close()
            raise Outside("porter file %r cannot be opened: %s" % (meta.get("path"), e)) from None
        files.appendlist(meta["field"], f)
        adopted.append(f)
    request._post = post
    request._files = files
    return adopted


def _split(fields, json_files, template):
    """The client's own fields, and one dict of attributes per file (with ``field``),
    refusing any name a framework could read as one of the files' metadata."""
    for name, _ in fields:
        if names.has_control(name):
            raise BadMetadata("control-in-name", "a field name holds a control character")
    if json_files is None:
        read = [(n, template.read(n)) for n, _ in fields]
        client = [(n, v) for (n, v), (_, r) in zip(fields, read) if r is None]
        metas = _group([(r, v) for (_, v), (_, r) in zip(fields, read) if r is not None])
    else:
        client, metas = fields, json_files
        if any("field" not in m for m in metas):
            raise BadMetadata("bad-metadata", "a file without its field")
        for name, _ in fields:
            if template.read(name) is not None:
                raise BadMetadata("forged-name", "a json field named like porter metadata: %r" % name)
    _refuse_lookalikes([n for n, _ in client], metas, template)
    for meta in metas:
        missing = [a for a in names.BASE if a not in meta]
        if missing:
            raise BadMetadata("bad-metadata", "a file without %s" % ", ".join(missing))
    return client, metas


def _refuse_lookalikes(client_names, metas, template) -> None:
    """No two names in the request may read the same once normalised, if one of them is
    metadata: ``" file.path"`` is exactly the path of a field called ``" file"``, and
    ``file_path`` a client field, but to some framework both are ``file.path``."""
    seen = {}
    for meta in metas:
        for attr in names.RESERVED:
            name = template.name(meta["field"], attr)
            seen.setdefault(names.normalise(name), set()).add(name)
    for name in client_names:
        if names.normalise(name) in seen:
            raise BadMetadata("forged-name", "a client field could pass for porter metadata: %r" % name)
    for exact in seen.values():
        if len(exact) > 1:
            raise BadMetadata("forged-name", "metadata names that read alike: %r" % sorted(exact))


def _group(pairs):
    """Per field, one dict per file, paired by position: porter sends every attribute
    for every file, in order, so each attribute list has the same length."""
    by_field = {}
    for (field, attr), value in pairs:
        by_field.setdefault(field, {}).setdefault(attr, []).append(value)
    metas = []
    for field, attrs in by_field.items():
        counts = {len(v) for v in attrs.values()}
        if len(counts) != 1:
            raise BadMetadata("bad-metadata", "field %r has attribute lists of different lengths" % field)
        for i in range(counts.pop()):
            meta = {a: v[i] for a, v in attrs.items()}
            meta["field"] = field
            metas.append(meta)
    return metas


def _check_roots(metas) -> None:
    """With ``PORTER_ROOTS``: every non-empty path is absolute, resolves under a root,
    and is a regular file that is not a symlink."""
    roots = conf.roots()
    if roots is None:
        return
    for meta in metas:
        path = meta.get("path", "")
        if path and not inside(path, roots):
            raise Outside("porter file path %r is not a regular file under PORTER_ROOTS" % path)


def inside(path: str, roots) -> bool:
    """Whether ``path`` is a regular file (not a symlink) whose resolved directory lies
    under one of ``roots`` (resolved already): ``..`` and symlinked directories cannot
    lead out."""
    if not os.path.isabs(path):
        return False
    real = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    if not any(real.startswith(root.rstrip(os.sep) + os.sep) for root in roots):
        return False
    try:
        return stat.S_ISREG(os.lstat(real).st_mode)
    except OSError:
        return False


def _unsigned_metadata(request, template) -> bool:
    """Whether an unsigned request carries fields the app could read as metadata, as
    Django itself parses them (which strips names)."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return False
    data, json_files = _django_fields(request)
    return bool(json_files) or any(template.read(k.strip()) is not None for k in data.keys())


def _django_fields(request):
    """The body's fields as Django parses them (any method), and a JSON form's files."""
    ctype = request.META.get("CONTENT_TYPE", "")
    if ctype.startswith("application/json"):
        try:
            doc = json.loads(request.body or b"{}")
        except ValueError:
            return QueryDict(), []
        if not isinstance(doc, dict):
            return QueryDict(), []
        fields = doc.get("fields") if isinstance(doc.get("fields"), dict) else {}
        files = doc.get("files") if isinstance(doc.get("files"), list) else []
        return fields, files
    if request.method == "POST":
        return request.POST, []
    if ctype.startswith("multipart/form-data"):
        parser = MultiPartParser(request.META, io.BytesIO(request.body), request.upload_handlers, request.encoding)
        post, _ = parser.parse()
        return post, []
    if ctype.startswith("application/x-www-form-urlencoded"):
        return QueryDict(request.body, encoding=request.encoding), []
    return QueryDict(), []
