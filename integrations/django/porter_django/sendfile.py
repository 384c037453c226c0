"""``sendfile()``: let porter serve a stored file (X-Accel-Redirect)."""

import mimetypes
import os
from urllib.parse import quote

from django.http import FileResponse, HttpResponse

from . import conf


def sendfile(request, file, attachment=False, filename=None):
    """Answers with ``X-Accel-Redirect`` under the ``PORTER_INTERNAL`` prefix whose root
    holds ``file`` (a path or a ``FieldFile``), or a plain ``FileResponse`` when
    ``PORTER_SENDFILE`` is off (e.g. ``runserver`` in development)."""
    path = os.path.realpath(getattr(file, "path", file))
    name = filename or os.path.basename(path)
    if not conf.sendfile_enabled():
        return FileResponse(open(path, "rb"), as_attachment=attachment, filename=name)
    for root, prefix in conf.internal().items():
        root = os.path.realpath(str(root))
        if os.path.commonpath([root, path]) == root:
            rel = os.path.relpath(path, root)
            resp = HttpResponse()
            resp["X-Accel-Redirect"] = prefix.rstrip("/") + "/" + quote(rel)
            ctype, _ = mimetypes.guess_type(name)
            resp["Content-Type"] = ctype or "application/octet-stream"
            if attachment:
                resp["Content-Disposition"] = "attachment; filename*=UTF-8''%s" % quote(name)
            return resp
    raise ValueError("%s is under no PORTER_INTERNAL root" % path)
