"""With ``"porter_django"`` in ``INSTALLED_APPS``, ``manage.py check`` runs the
package's system checks (:mod:`porter_django.checks`)."""

from django.apps import AppConfig


class PorterDjangoConfig(AppConfig):
    name = "porter_django"
    verbose_name = "porter"

    def ready(self):
        from . import checks  # noqa: F401  (registers the checks)
