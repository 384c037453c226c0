#!/usr/bin/env python3
"""The example app's manage.py (run from this directory)."""
import os
import sys

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    # porter_django lives one level up when not pip-installed.
    sys.path[:0] = [here, os.path.dirname(here)]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
