"""A WSGI module that fails to import, as a broken deploy would."""

raise ImportError("simulated import error in the project's wsgi module")
