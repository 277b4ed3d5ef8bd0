"""`manage.py runprefork`: serve the project with django-prefork's pre-fork server.

Thin on purpose: parse options, resolve and validate the settings, run the system checks, bind,
print the banner, then hand over to the arbiter. Everything else lives in the server package.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import django
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_prefork import __version__
from django_prefork.conf import SETTINGS, Config, ConfigError, load_config, parse_bind
from django_prefork.conf import add_arguments as add_setting_arguments

EXIT_CONFIG_ERROR = 2


class Command(BaseCommand):
    help = (
        "Serve the project with django-prefork, a pre-fork HTTP server (gunicorn's options, "
        "configured by settings.PREFORK and the command line)."
    )
    # Checks run in handle(), after the settings are validated, as runserver does.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "addrport", nargs="?",
            help="Optional address to listen on, as runserver takes it: 8000, 0.0.0.0:8000 or "
                 "[::1]:8000. The same as one --bind.",
        )
        add_setting_arguments(parser)
        parser.add_argument("--check-config", action="store_true",
                            help="Validate the settings, run the checks, load the app, and exit.")
        parser.add_argument("--print-config", action="store_true",
                            help="Print every setting with its value and where it came from.")
        parser.add_argument("--skip-checks", action="store_true",
                            help="Skip the system checks at start-up.")

    def handle(self, *args: Any, **options: Any) -> None:
        cli = self.cli_overrides(options)
        cfg = self.load_settings(cli)
        if options["print_config"]:
            self.stdout.write(cfg.format_for_print())
            return
        if not options["skip_checks"]:
            self.run_checks()
        if options["check_config"]:
            self.load_app()
            self.stdout.write("Configuration OK.")
            return
        self.serve(cfg, cli)

    # -- steps -----------------------------------------------------------------------------
    @staticmethod
    def cli_overrides(options: dict[str, Any]) -> dict[str, Any]:
        """Only the settings given on the command line (the registry's defaults are SUPPRESS)."""
        cli = {s.name: options[s.name] for s in SETTINGS if s.name in options}
        if options.get("addrport"):
            from django_prefork.conf import parse_addrport

            try:
                spec = parse_addrport(options["addrport"])
            except ValueError as exc:
                raise CommandError(f"ADDRPORT {options['addrport']!r} is invalid: {exc}",
                                   returncode=EXIT_CONFIG_ERROR) from None
            cli["bind"] = [str(spec), *cli.get("bind", [])]
        return cli

    @staticmethod
    def load_settings(cli: dict[str, Any]) -> Config:
        try:
            return load_config(prefork=getattr(settings, "PREFORK", None),
                               environ=os.environ, cli=cli)
        except ConfigError as exc:
            raise CommandError(str(exc), returncode=EXIT_CONFIG_ERROR) from None

    def run_checks(self, app: Any = None) -> None:
        from django_prefork.checks import STARTUP_TAGS, serving

        self.stdout.write("Performing system checks...\n\n")
        self.check(display_num_errors=True)
        # Our deployment checks (static files, DEBUG) run whenever we really serve.
        with serving(app):
            self.check(tags=STARTUP_TAGS, include_deployment_checks=True)
        self.check_migrations()

    def load_app(self) -> Any:
        from django_prefork.workers.base import load_wsgi_app

        try:
            return load_wsgi_app()
        except Exception as exc:
            self.stderr.write(traceback.format_exc())
            raise CommandError(f"Failed to load the WSGI application: {exc}") from None

    def serve(self, cfg: Config, cli: dict[str, Any]) -> None:
        from django.db import connections

        from django_prefork.logging import configure_logging
        from django_prefork.server.arbiter import Arbiter
        from django_prefork.server.sockets import BindError, create_listeners, systemd_listeners

        app = None
        if cfg.preload_app:
            if cfg.worker_class == "gevent":
                # gevent must patch before Django is imported, which a fork of this process
                # cannot do: such workers always start as fresh interpreters.
                self.stderr.write("--preload is ignored with the gevent worker class.")
            else:
                app = self.load_app()
        # After the app is loaded: loading it may re-apply LOGGING (django.setup()).
        configure_logging(cfg)
        try:
            listeners = systemd_listeners() or create_listeners(
                [parse_bind(b) for b in cfg.bind], cfg.backlog)
        except BindError as exc:
            raise CommandError(str(exc)) from None
        # Children must not share the master's database connections.
        connections.close_all()
        from django_prefork.server.master import (
            exec_lean_master,
            hold_signals,
            lean_master_possible,
        )

        hold_signals()  # from the banner on, signals wait for the master's handlers
        self.print_banner(cfg, listeners)
        if lean_master_possible(cfg, getattr(settings, "LOGGING", None)):
            exec_lean_master(cfg, listeners, cli)  # the same process, without Django
        status = Arbiter(cfg, listeners, cli_overrides=cli, app=app).run()
        if status:
            sys.exit(status)

    def print_banner(self, cfg: Config, listeners: list) -> None:
        from django_prefork.workers.base import resolve_worker_class

        worker_class = resolve_worker_class(cfg.worker_class, cfg)  # sync + threads = gthread
        quit_command = "CTRL-BREAK" if sys.platform == "win32" else "CONTROL-C"
        lines = [
            f"django-prefork {__version__}, Django {django.get_version()}, "
            f"using settings {settings.SETTINGS_MODULE!r}",
            *(f"Listening at: {listener.url()} (pid {os.getpid()})" for listener in listeners),
            f"Using worker: {worker_class}, {cfg.workers} "
            f"worker{'s' if cfg.workers != 1 else ''}"
            + (f", {cfg.threads} threads each" if worker_class == "gthread" else "")
            + (", app preloaded" if cfg.preload_app else ""),
            f"Quit the server with {quit_command} (SIGTERM stops gracefully).",
        ]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()
