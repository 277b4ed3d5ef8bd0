"""django-prefork: a pre-fork HTTP server that lives inside Django (`manage.py runprefork`)."""

__version__ = "0.1.0"
