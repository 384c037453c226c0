"""``S3Storage``: django-storages' S3 storage that adopts the objects porter uploaded.

With porter's ``[storage] backend = "s3"``, an offloaded file is already an object in the
bucket (``PorterUploadedFile.porter_key``). Saving it to a ``FileField`` on this storage
copies that object server-side to the field's name and deletes porter's key, so the
bytes never pass through Django (for objects over 5 GiB boto3 makes the copy a
multipart copy). Any other content is saved as django-storages saves it.

    STORAGES = {"default": {"BACKEND": "porter_django.storage.S3Storage", "OPTIONS": {...}}}
"""

from storages.backends.s3 import S3Storage as _S3Storage
from storages.utils import clean_name


class S3Storage(_S3Storage):
    def _save(self, name, content):
        key = getattr(content, "porter_key", "")
        if not key:
            return super()._save(name, content)
        source_bucket = getattr(content, "porter_bucket", "") or self.bucket_name
        cleaned = clean_name(name)
        target = self._normalize_name(cleaned)
        client = self.connection.meta.client
        extra = {}
        content_type = getattr(content, "content_type", None)
        if content_type:
            extra = {"ContentType": content_type, "MetadataDirective": "REPLACE"}
        client.copy({"Bucket": source_bucket, "Key": key}, self.bucket_name, target, ExtraArgs=extra)
        client.delete_object(Bucket=source_bucket, Key=key)
        content.porter_adopted = True
        return cleaned

    def delete_porter_object(self, uploaded):
        """Deletes porter's object of a file the app did not save."""
        key = getattr(uploaded, "porter_key", "")
        if key and not getattr(uploaded, "porter_adopted", False):
            bucket = getattr(uploaded, "porter_bucket", "") or self.bucket_name
            self.connection.meta.client.delete_object(Bucket=bucket, Key=key)
