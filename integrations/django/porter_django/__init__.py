"""Django side of porter (docs/guides/django.md).

porter streams uploads to disk and sends the app a small, signed metadata request.
``PorterMiddleware`` verifies the signature and turns that metadata back into
``request.FILES``, so existing forms and views work unchanged; ``sendfile`` answers
downloads with ``X-Accel-Redirect`` so porter serves the bytes.
"""

from .sendfile import sendfile

__all__ = ["sendfile"]
