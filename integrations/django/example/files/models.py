import uuid

from django.db import models


class Handle(models.Model):
    """An upload session, made by the wizard's first step; files belong to one."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    created = models.DateTimeField(auto_now_add=True)


class StoredFile(models.Model):
    uuid = models.UUIDField(unique=True, default=uuid.uuid4)
    handle = models.ForeignKey(Handle, on_delete=models.CASCADE, related_name="files")
    name = models.CharField(max_length=255)
    file = models.FileField(upload_to="files/")
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64, blank=True)

    class Meta:
        unique_together = [("handle", "name")]
