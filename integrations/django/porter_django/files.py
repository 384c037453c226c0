"""``PorterUploadedFile``: a file porter already stored, as Django's ``UploadedFile``."""

import os

from django.core.files.uploadedfile import UploadedFile

from .names import BASE, HASHES

ATTRS = BASE + HASHES


def _open(path: str):
    """Opens porter's file for reading, never through a symlink in its last component."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    return os.fdopen(fd, "rb")


class PorterUploadedFile(UploadedFile):
    """Backed by porter's stored file. ``temporary_file_path()`` is that file, so a
    ``FileField`` save on the same filesystem moves (renames) it instead of copying."""

    def __init__(self, meta: dict):
        path = meta.get("path", "")
        super().__init__(
            file=_open(path) if path else None,
            name=meta.get("name") or "unnamed",
            content_type=meta.get("content_type") or "application/octet-stream",
            size=int(meta.get("size") or 0),
            charset=meta.get("charset") or None,
        )
        self.porter_path = path
        self.porter_id = meta.get("id", "")
        self.porter_key = meta.get("key", "")
        self.porter_bucket = meta.get("bucket", "")
        self.detected_type = meta.get("detected_type", "")
        for h in HASHES:
            setattr(self, h, meta.get(h, ""))

    def temporary_file_path(self):
        return self.porter_path

    def close(self):
        if self.file is None:
            # An object in S3: nothing open here.
            return None
        try:
            return super().close()
        except FileNotFoundError:
            # Moved away by a FileField save: nothing to close on disk.
            pass

    def discard(self):
        """Deletes porter's file unless the app moved or saved it (as Django deletes
        its temporary uploads at the end of a request). An object in S3 is deleted
        through the default storage, when that is ``porter_django.storage.S3Storage``."""
        try:
            self.close()
        finally:
            if self.porter_path and os.path.exists(self.porter_path):
                os.remove(self.porter_path)
            elif self.porter_key and not self.porter_path:
                from django.core.files.storage import default_storage

                delete = getattr(default_storage, "delete_porter_object", None)
                if delete is not None:
                    delete(self)
