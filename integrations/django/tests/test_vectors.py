"""The shared trust vectors (``tests/vectors/trust.json``, produced by porter's own
encoder and signer in ``tests/it/vectors.rs``), verified by porter_django: every
verdict, every refusal reason, every accepted field and file."""

import json
import os
import shutil
from unittest import mock

from django.core.cache import caches
from django.test import TestCase, override_settings

from porter_django import names, signature

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
with open(os.path.join(REPO, "tests", "vectors", "trust.json"), encoding="utf-8") as f:
    VECTORS = json.load(f)

FILE_ATTRS = ("field", "name", "path", "size", "id", "key", "bucket", "md5", "sha256", "content_type", "detected_type")


def lay_out_disk():
    """The files and symlinks the vectors' paths point at, fresh (an accepted request
    deletes the files its view did not keep)."""
    disk = VECTORS["disk"]
    top = os.path.commonpath(list(disk["files"]) + list(disk["symlinks"]))
    shutil.rmtree(top, ignore_errors=True)
    for path, content in disk["files"].items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as out:
            out.write(content)
    for link, target in disk["symlinks"].items():
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(target, link)


def verifier_settings(vector):
    v = dict(VECTORS["verifier"], **vector.get("verifier", {}))
    return {
        "PORTER_SECRET": [VECTORS["keys"][k]["secret"] for k in v["keys"]],
        "PORTER_FIELD_NAMES": v["field_names"],
        "PORTER_ROOTS": v["roots"],
        "PORTER_MAX_SKEW": VECTORS["max_skew"],
    }


@override_settings(ROOT_URLCONF="tests.vector_urls", ALLOWED_HOSTS=["app.example"])
class VectorTests(TestCase):
    def send(self, request, raw_uri: bool):
        headers = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in request["headers"].items() if k != "Content-Type"}
        if raw_uri:
            headers["RAW_URI"] = request["target"]
        return self.client.generic(
            request["method"],
            request["target"],
            data=request["body"].encode("utf-8"),
            content_type=request["headers"]["Content-Type"],
            **headers,
        )

    def check(self, expect, response, logs):
        verdict = expect["verdict"]
        if verdict == "reject":
            self.assertEqual(response.status_code, expect["status"], response.content)
            self.assertTrue(any("(%s)" % expect["reason"] in line for line in logs), logs)
            return
        self.assertEqual(response.status_code, 200, response.content)
        got = response.json()
        if verdict == "pass":
            self.assertEqual(got["files"], [])
            return
        self.assertEqual(got["fields"], expect["fields"])
        want = [{a: f[a] for a in FILE_ATTRS if a in f} for f in expect["files"]]
        self.assertEqual([{a: f[a] for a in FILE_ATTRS if a in f} for f in got["files"]], want)

    def run_vector(self, vector, raw_uri: bool):
        lay_out_disk()
        caches["default"].clear()
        expects = vector["expect"] if isinstance(vector["expect"], list) else [vector["expect"]]
        with self.settings(**verifier_settings(vector)), mock.patch.object(signature.time, "time", return_value=VECTORS["now"]):
            for expect in expects:
                with self.assertLogs("porter_django", "DEBUG") as captured:
                    signature.log.debug("vector %s", vector["name"])
                    response = self.send(vector["request"], raw_uri)
                self.check(expect, response, captured.output)

    def test_every_vector_with_and_without_the_raw_target(self):
        self.assertGreater(len(VECTORS["vectors"]), 40)
        for vector in VECTORS["vectors"]:
            for raw_uri in (True, False):
                with self.subTest(vector["name"], raw_uri=raw_uri):
                    self.run_vector(vector, raw_uri)

    def test_key_ids_are_porters(self):
        for name, key in VECTORS["keys"].items():
            self.assertEqual(signature.key_id(key["secret"].encode()), key["key_id"], name)

    def test_names_are_read_as_porter_reads_them(self):
        self.assertEqual(list(names.RESERVED), VECTORS["reserved_attrs"])
        template = names.Template(VECTORS["verifier"]["field_names"])
        for case in VECTORS["names"]:
            n = case["name"]
            self.assertEqual(names.normalise(n), case["normalised"], repr(n))
            verdict = "refuse" if names.has_control(n) else "drop" if template.collides(n) else "keep"
            self.assertEqual(verdict, case["verdict"], repr(n))
