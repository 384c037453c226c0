"""porter_django with real Django: requests signed exactly as porter signs them
(SPEC §4.2), against forms, storage and the completion views."""

import hashlib
import hmac
import os
import secrets
import time

from django.conf import settings
from django.test import TestCase
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

from porter_django.middleware import template_regex


def stored_file(data: bytes) -> str:
    """A file where porter would have stored it (same filesystem as MEDIA_ROOT)."""
    root = os.path.join(settings.BASE, "uploads")
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, secrets.token_hex(16))
    with open(path, "wb") as f:
        f.write(data)
    return path


def meta(path: str, name: str, data: bytes, field="file") -> dict:
    return {
        field + ".name": name,
        field + ".content_type": "text/plain",
        field + ".charset": "",
        field + ".detected_type": "",
        field + ".path": path,
        field + ".key": "ab/cd/x",
        field + ".bucket": "",
        field + ".id": "8d0f2f44-2b67-4b8c-9a7e-0d7c7c5f6a11",
        field + ".size": str(len(data)),
        field + ".md5": hashlib.md5(data).hexdigest(),
        field + ".sha256": hashlib.sha256(data).hexdigest(),
    }


def sign(method, target, ctype, body, ts=None, nonce=None, secret=None):
    ts = str(int(time.time()) if ts is None else ts)
    nonce = nonce or secrets.token_hex(16)
    lines = [ts, nonce, method, "testserver", target, ctype, hashlib.sha256(body).hexdigest()]
    key = (secret or settings.PORTER_SECRET).encode()
    mac = hmac.new(key, "\n".join(lines).encode(), hashlib.sha256).hexdigest()
    return {
        "HTTP_HOST": "testserver",
        "HTTP_X_PORTER_TIMESTAMP": ts,
        "HTTP_X_PORTER_NONCE": nonce,
        "HTTP_X_PORTER_SIGNATURE": "sha256=" + mac,
    }


class MiddlewareTests(TestCase):
    def post(self, path, fields, method="post", **sig):
        body = encode_multipart(BOUNDARY, fields)
        headers = sign(method.upper(), path, MULTIPART_CONTENT, body, **sig)
        return self.client.generic(method.upper(), path, data=body, content_type=MULTIPART_CONTENT, **headers)

    def test_signed_metadata_becomes_request_files_and_saving_moves_the_file(self):
        data = b"hello porter\n" * 100
        path = stored_file(data)
        inode = os.stat(path).st_ino
        r = self.post("/upload", {"title": "t", **meta(path, "a.txt", data)})
        self.assertEqual(r.status_code, 200, r.content)
        got = r.json()
        self.assertEqual(got["title"], "t")
        self.assertEqual(got["fields"], ["title"], "metadata fields leave request.POST")
        self.assertEqual(got["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(os.stat(got["saved"]).st_ino, inode, "moved, not copied")
        self.assertFalse(os.path.exists(path))

    def test_forged_stale_replayed_and_wrongly_signed_requests_are_refused(self):
        data = b"x"
        path = stored_file(data)
        fields = {"title": "t", **meta(path, "a.txt", data)}
        r = self.client.post("/upload", fields)
        self.assertEqual(r.status_code, 403, "metadata without a signature")
        self.assertEqual(self.post("/upload", fields, ts=int(time.time()) - 1000).status_code, 403)
        self.assertEqual(self.post("/upload", fields, secret="w" * 32).status_code, 403)
        nonce = secrets.token_hex(16)
        self.assertEqual(self.post("/upload", fields, nonce=nonce).status_code, 200)
        path = stored_file(data)
        fields = {"title": "t", **meta(path, "a.txt", data)}
        self.assertEqual(self.post("/upload", fields, nonce=nonce).status_code, 403, "replay")

    def test_unsaved_files_are_deleted_and_plain_requests_pass(self):
        data = b"abc"
        path = stored_file(data)
        r = self.post("/look", meta(path, "b.txt", data))
        self.assertEqual(r.json(), {"name": "b.txt", "fields": []})
        self.assertFalse(os.path.exists(path), "a file the view did not keep is removed")
        r = self.client.post("/look", {"title": "plain"})
        self.assertEqual(r.json(), {"name": None, "fields": ["title"]})

    def test_put_bodies_are_parsed_too(self):
        data = b"put"
        path = stored_file(data)
        r = self.post("/look", meta(path, "c.txt", data), method="put")
        self.assertEqual(r.json()["name"], "c.txt")

    def test_tus_notify_view_hands_over_the_file(self):
        data = b"tus bytes"
        path = stored_file(data)
        r = self.post("/notify", meta(path, "t.bin", data))
        self.assertEqual(r.status_code, 200, r.content)
        self.assertEqual(r.json()["md5"], hashlib.md5(data).hexdigest())
        self.assertTrue(r.json()["saved"].startswith("tus/"))

    def test_sendfile_answers_with_x_accel_redirect(self):
        os.makedirs(os.path.join(settings.MEDIA_ROOT, "docs"), exist_ok=True)
        with open(os.path.join(settings.MEDIA_ROOT, "docs", "r é.txt"), "wb") as f:
            f.write(b"x")
        r = self.client.get("/d/docs/r é.txt")
        self.assertEqual(r["X-Accel-Redirect"], "/protected/docs/r%20%C3%A9.txt")
        self.assertEqual(r["Content-Disposition"], "attachment; filename*=UTF-8''r%20%C3%A9.txt")
        with self.settings(PORTER_SENDFILE=False):
            r = self.client.get("/d/docs/r é.txt")
            self.assertEqual(b"".join(r.streaming_content), b"x")

    def test_field_name_templates(self):
        rx = template_regex("porter.{field}.{attr}")
        m = rx.match("porter.user.name")
        self.assertEqual((m.group("field"), m.group("attr")), ("user", "name"))
        self.assertIsNone(rx.match("user.name"))
