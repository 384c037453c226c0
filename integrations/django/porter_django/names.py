"""Metadata field names, read exactly, and the readings under which a client's field
could pass for one (porter's ``src/namespace.rs`` applies the same rules; the shared
vectors in ``tests/vectors/trust.json`` check that both agree).

porter names each file's metadata by a template (``{field}.{attr}``). A name is
metadata only when it matches the template *exactly* (``re.fullmatch``: ``$`` would
match before a trailing newline). Frameworks read names more loosely: Django strips
whitespace in multipart names, PHP maps ``.``, space and ``[`` to ``_``, others fold
case. :func:`normalise` is the union of those readings.
"""

import re
import unicodedata

HASHES = ("md5", "sha1", "sha256", "sha512", "crc32")
BASE = ("name", "content_type", "charset", "detected_type", "path", "key", "bucket", "id", "size")
#: Every attribute porter sends or has reserved (``scan``: malware scanning, later).
RESERVED = BASE + HASHES + ("scan",)

# Unicode White_Space (what Rust's char::is_whitespace tests) and the zero-width
# format characters porter also strips at a name's edges.
_WHITESPACE = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B)
}
_FORMAT = {chr(c) for c in range(0x200B, 0x2010)} | {chr(c) for c in range(0x2060, 0x2065)} | {"\ufeff", "\xad"}


def _control(c: str) -> bool:
    return unicodedata.category(c) == "Cc"


def _ignorable(c: str) -> bool:
    return c in _WHITESPACE or c in _FORMAT or _control(c)


def has_control(name: str) -> bool:
    """Whether ``name`` holds a control character (C0, DEL or C1) anywhere, raw or as
    the ``%0A`` / ``%0D`` escape that WHATWG multipart parsers decode in names."""
    lower = name.lower()
    return any(_control(c) for c in name) or "%0a" in lower or "%0d" in lower


def normalise(name: str) -> str:
    """``name`` as the most lenient framework reads it, in ASCII: NFKD, edges stripped
    of whitespace, control and zero-width characters, then character by character
    ``.``, space and ``[`` as ``_``, ``]`` and ``\\`` dropped, case folded as
    ``lower(upper(c))``, and whatever is still not ASCII dropped (as porter does)."""
    name = unicodedata.normalize("NFKD", name)
    start, end = 0, len(name)
    while start < end and _ignorable(name[start]):
        start += 1
    while end > start and _ignorable(name[end - 1]):
        end -= 1
    return _fold(name[start:end])


def _fold(s: str) -> str:
    out = []
    for c in s:
        if c in ".[ ":
            out.append("_")
        elif c in "]\\" or _control(c):
            continue
        elif c.isascii():
            out.append(c.lower())
        else:
            out.append("".join(f for f in c.upper().lower() if f.isascii()))
    return "".join(out)


class Template:
    """A ``field_names`` template: builds names, and reads them back exactly."""

    def __init__(self, template: str):
        self.template = template
        pattern = re.escape(template)
        pattern = pattern.replace(re.escape("{field}"), r"(?P<field>.*?)")
        pattern = pattern.replace(re.escape("{attr}"), "(?P<attr>%s)" % "|".join(RESERVED))
        self._regex = re.compile(pattern, re.DOTALL)

    def name(self, field: str, attr: str) -> str:
        return self.template.replace("{field}", field).replace("{attr}", attr)

    def collides(self, name: str) -> bool:
        """porter's rule for dropping a client field: whether ``normalise(name)`` is the
        normalised name of some file's metadata under this template, whatever the
        file's field is called."""
        n = normalise(name)
        for attr in RESERVED:
            pre, _, post = self.template.replace("{attr}", attr).partition("{field}")
            pre, post = _fold(pre), _fold(post)
            if len(n) >= len(pre) + len(post) and n.startswith(pre) and n.endswith(post):
                return True
        return False

    def read(self, name: str):
        """``(field, attr)`` when ``name`` is exactly a metadata name, else ``None``."""
        m = self._regex.fullmatch(name)
        return (m.group("field"), m.group("attr")) if m else None
