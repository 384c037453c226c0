"""porter_django with real Django: requests signed exactly as porter signs them
(docs/reference/signature.md), against forms, storage and the completion views."""

import hashlib
import hmac
import os
import secrets
import time

from django.conf import settings
from django.test import TestCase
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

from porter_django import checks, signature
from porter_django.middleware import template_regex


def stored_file(data: bytes) -> str:
    """A file where porter would have stored it (same filesystem as MEDIA_ROOT)."""
    root = settings.PORTER_ROOTS[0]
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
    """The headers porter would send (docs/reference/signature.md)."""
    ts = str(int(time.time()) if ts is None else ts)
    nonce = nonce or secrets.token_hex(16)
    lines = [ts, nonce, method, "testserver", target, ctype, hashlib.sha256(body).hexdigest()]
    key = (secret or settings.PORTER_SECRET).encode()
    mac = hmac.new(key, "\n".join(lines).encode(), hashlib.sha256).hexdigest()
    return {
        "HTTP_HOST": "testserver",
        "HTTP_X_PORTER_KEY_ID": hmac.new(key, b"porter-key-id", hashlib.sha256).hexdigest()[:16],
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

    def test_keys_rotate_without_a_flag_day(self):
        """Apps hold [new, old] while porter switches; the old key stops working once
        removed, and an unknown key id is named in the log."""
        data = b"rotate"
        new, old = "n" * 32, settings.PORTER_SECRET
        with self.settings(PORTER_SECRET=[new, old]):
            for key in (old, new):
                fields = meta(stored_file(data), "r.txt", data)
                self.assertEqual(self.post("/look", fields, secret=key).status_code, 200, key)
        with self.settings(PORTER_SECRET=[new]), self.assertLogs("porter_django", "WARNING") as logs:
            fields = meta(stored_file(data), "r.txt", data)
            self.assertEqual(self.post("/look", fields, secret=old).status_code, 403)
        self.assertIn("unknown-key", logs.output[0])

    def test_key_files_may_be_a_list(self):
        paths = []
        for i, key in enumerate(("f" * 32 + "\n", settings.PORTER_SECRET)):
            paths.append(os.path.join(settings.BASE, "key%d" % i))
            with open(paths[-1], "w") as f:
                f.write(key)
        data = b"k"
        missing = os.path.join(settings.BASE, "secret.old")
        with self.settings(PORTER_SECRET=None, PORTER_SECRET_FILE=paths + [missing]):
            fields = meta(stored_file(data), "k.txt", data)
            self.assertEqual(self.post("/look", fields, secret="f" * 32).status_code, 200)
            fields = meta(stored_file(data), "k.txt", data)
            self.assertEqual(self.post("/look", fields, secret="s" * 32).status_code, 200, "the second key too")
        with self.settings(PORTER_SECRET=None, PORTER_SECRET_FILE=[missing]):
            self.assertIn("porter_django.E001", {m.id for m in checks.porter_settings()})

    def test_paths_outside_the_roots_are_refused_even_when_signed(self):
        data = b"secret"
        outside = os.path.join(settings.BASE, "elsewhere")
        os.makedirs(outside, exist_ok=True)
        target = os.path.join(outside, "passwd")
        with open(target, "wb") as f:
            f.write(data)
        link = os.path.join(settings.PORTER_ROOTS[0], "link")
        if not os.path.lexists(link):
            os.symlink(target, link)
        for path in (target, link, settings.PORTER_ROOTS[0], settings.PORTER_ROOTS[0] + "/../elsewhere/passwd"):
            with self.assertLogs("porter_django", "WARNING") as logs:
                r = self.post("/upload", {"title": "t", **meta(path, "a.txt", data)})
            self.assertEqual(r.status_code, 403, path)
            self.assertIn("outside-roots", logs.output[0])
        self.assertTrue(os.path.exists(target), "a refused file is never touched")

    def test_forged_names_in_a_signed_body_are_refused(self):
        data = b"f"
        path = stored_file(data)
        for forged in ("file.path ", "file_path", "FILE.PATH", "file.path\x0b", "file[path"):
            fields = {forged: "/etc/passwd", **meta(path, "a.txt", data)}
            r = self.post("/look", fields)
            self.assertEqual(r.status_code, 400, repr(forged))
        self.assertTrue(os.path.exists(path), "nothing adopted, nothing deleted")

    def test_request_post_holds_exact_names(self):
        """An ordinary field whose name Django's parser would strip keeps its name."""
        data = b"e"
        r = self.post("/look", {" title ": "t", **meta(stored_file(data), "e.txt", data)})
        self.assertEqual(r.json()["fields"], [" title "])

    def test_system_checks_name_weak_settings(self):
        ids = lambda: {m.id for m in checks.porter_settings()}  # noqa: E731
        self.assertEqual(ids(), {"porter_django.W001"}, "the test settings: a per-process cache")
        with self.settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}):
            self.assertIn("porter_django.E003", ids())
        with self.settings(PORTER_ROOTS=None, PORTER_SENDFILE=False):
            self.assertTrue({"porter_django.W002", "porter_django.W003"} <= ids())
        with self.settings(PORTER_SECRET=None, PORTER_SECRET_FILE="/nonexistent/secret"):
            self.assertIn("porter_django.E001", ids())
        with self.settings(PORTER_SECRET="short"):
            self.assertIn("porter_django.E001", ids())

    def test_a_query_any_server_decodes_verifies(self):
        """Without RAW_URI Django rebuilds the target: porter's canonical query survives."""
        data = b"q"
        fields = meta(stored_file(data), "q.txt", data)
        target = "/look?q=a%7Cb%7B%22%C3%A9&x=1"
        # WSGI hands the query over as latin-1 text of the raw bytes (é is \xc3\xa9).
        self.assertEqual(signature.canonical_query("q=a|b{\"\xc3\xa9&x=1"), target.split("?")[1])
        body = encode_multipart(BOUNDARY, fields)
        headers = sign("POST", target, MULTIPART_CONTENT, body)
        r = self.client.generic("POST", target, data=body, content_type=MULTIPART_CONTENT, **headers)
        self.assertEqual(r.status_code, 200, r.content)
        # A server that hands the query over as the client sent it (| and { raw).
        fields = meta(stored_file(data), "q.txt", data)
        body = encode_multipart(BOUNDARY, fields)
        headers = sign("POST", "/look?q=a%7Cb%7B", MULTIPART_CONTENT, body)
        r = self.client.generic("POST", "/look?q=a|b{", data=body, content_type=MULTIPART_CONTENT, **headers)
        self.assertEqual(r.status_code, 200, r.content)
