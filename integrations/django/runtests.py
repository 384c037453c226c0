"""Runs the package's tests with real Django: `python runtests.py` (exit 0 on success)."""

import os
import sys

import django
from django.conf import settings
from django.test.utils import get_runner

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    # Test labels resolve against the working directory: run from here.
    os.chdir(here)
    sys.path.insert(0, here)
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    django.setup()
    runner = get_runner(settings)(verbosity=1)
    sys.exit(bool(runner.run_tests(["tests.test_porter", "tests.test_vectors"])))
