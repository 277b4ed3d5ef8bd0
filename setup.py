"""Packaging for django-prefork.

Tool configuration (ruff, pytest) lives in pyproject.toml; packaging lives here.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def read_version():
    """Read ``__version__`` from django_prefork/__init__.py without importing the package."""
    text = (HERE / "django_prefork" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    if not match:
        raise RuntimeError("__version__ not found in django_prefork/__init__.py")
    return match.group(1)


TEST_REQUIRES = [
    "pytest>=8",
    "pytest-django>=4.9",
    "pytest-timeout",
    "requests>=2.31",
    "whitenoise>=6.6",
    "hypothesis>=6.100",
    "gevent>=24.2",
    # tests/test_checks.py reads a real PostgreSQL's connection limit (W015)
    "psycopg[binary]>=3.1",
    # tests/test_packaging.py builds the sdist and wheel offline and checks them
    "build>=1.2",
    "twine>=5",
    "setuptools>=77",
]

setup(
    name="django-prefork",
    version=read_version(),
    description=(
        "A pre-fork HTTP/1.1 WSGI server for Django, run as `manage.py runprefork` "
        "and configured in settings.py with gunicorn's setting names."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    author="django-prefork contributors",
    license="BSD-3-Clause",
    packages=find_packages(include=["django_prefork", "django_prefork.*"]),
    include_package_data=True,
    package_data={"django_prefork": ["py.typed"]},
    zip_safe=False,
    python_requires=">=3.10",
    install_requires=[
        "Django>=5.2",
        "httptools>=0.6.4",
        "setproctitle>=1.3",
    ],
    extras_require={
        "gevent": ["gevent>=24.2"],
        "demo": ["whitenoise>=6.6"],
        "test": TEST_REQUIRES,
        "dev": [*TEST_REQUIRES, "ruff", "tox>=4", "build", "twine"],
    },
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Environment :: Web Environment",
        "Framework :: Django",
        "Framework :: Django :: 5.2",
        "Framework :: Django :: 6.0",
        "Framework :: Django :: 6.1",
        "Intended Audience :: Developers",
        "Operating System :: POSIX",
        "Programming Language :: Python",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Internet :: WWW/HTTP",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Server",
        "Typing :: Typed",
    ],
)
