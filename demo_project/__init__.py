"""A small Django project that shows django-prefork serving a real site."""
