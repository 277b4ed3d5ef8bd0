"""`manage.py runprefork`: serve the project with django-prefork's pre-fork server.

Thin on purpose: parse options, resolve and validate the settings, run the system checks, bind,
print the banner, then hand over to the arbiter. Everything else lives in the server package.
Every start-up mistake ends in one line and a non-zero exit, never a traceback (except the
project's own import error, whose traceback is the useful part).
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import django
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser, SystemCheckError

from django_prefork import __version__
from django_prefork.conf import (
    SETTINGS,
    Config,
    ConfigError,
    load_config,
    load_config_collecting,
    parse_bind,
)
from django_prefork.conf import add_arguments as add_setting_arguments

EXIT_CONFIG_ERROR = 2
EXIT_STARTUP_ERROR = 1


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
        if options["check_config"] and not options["print_config"]:
            self.check_config(cli, run_checks=not options["skip_checks"])
            return
        cfg = self.load_settings(cli)
        for note in cfg.notes:  # e.g. a config file's wsgi_app, which WSGI_APPLICATION serves
            self.stderr.write(note)
        if options["print_config"]:
            self.stdout.write(cfg.format_for_print())
            return
        if not options["skip_checks"]:
            self.run_checks(cfg=cfg)
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
        """The resolved settings; the first mistake as one line (and how many more there are)."""
        try:
            return load_config(prefork=getattr(settings, "PREFORK", None),
                               environ=os.environ, cli=cli)
        except ConfigError as exc:
            more = len(exc.errors) - 1
            suffix = (f" ({more} more problem{'s' if more > 1 else ''}: --check-config lists "
                      "them all)") if more else ""
            raise CommandError(f"{exc}{suffix}", returncode=EXIT_CONFIG_ERROR) from None

    def check_config(self, cli: dict[str, Any], *, run_checks: bool) -> None:
        """--check-config: report every problem, as ``manage.py check`` does, then exit.

        The settings, the system checks, the start-up paths and the app are each looked at
        even when an earlier one failed, so one run lists everything to fix.
        """
        cfg, errors = load_config_collecting(prefork=getattr(settings, "PREFORK", None),
                                             environ=os.environ, cli=cli)
        failed = bool(errors)
        for note in cfg.notes:
            self.stderr.write(note)
        # The system checks report PREFORK's own problems (E001, with a hint): not twice.
        for err in errors:
            if not run_checks or err.source != "PREFORK":
                self.stderr.write(f"ERROR: {err}")
        if run_checks:
            from django.db import connections

            try:  # an explicit check may connect to the databases (Django's --database)
                self.run_checks(cfg=cfg, databases=list(connections))
            except SystemCheckError as exc:
                self.stderr.write(str(exc))
                failed = True
        from django_prefork.logging import logging_problems

        for problem in [*startup_problems(cfg), *logging_problems(cfg)]:
            self.stderr.write(f"ERROR: {problem}")
            failed = True
        try:
            self.load_app()
        except CommandError as exc:
            self.stderr.write(f"ERROR: {exc}")
            failed = True
        if failed:
            raise CommandError("The configuration has problems, listed above.",
                               returncode=EXIT_CONFIG_ERROR)
        self.stdout.write("Configuration OK.")

    def run_checks(self, app: Any = None, cfg: Config | None = None,
                   databases: list[str] | None = None) -> None:
        from django_prefork.checks import serving

        self.stdout.write("Performing system checks...\n\n")
        # One pass and one summary: inside serving() the ordinary checks include ours that
        # only matter when we really serve (static and media files, DEBUG). ``databases``
        # lets the checks that need a connection (W015, Django's own) connect.
        with serving(app, cfg):
            self.check(display_num_errors=True, databases=databases)
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

        from django_prefork.conf.process import apply_process_settings
        from django_prefork.logging import LoggingSetupError, configure_logging
        from django_prefork.metrics.master import open_metrics_listener
        from django_prefork.server.arbiter import Arbiter
        from django_prefork.server.pidfile import PidfileError
        from django_prefork.server.sockets import (
            BindError,
            create_listeners,
            inherited_listeners,
            systemd_listeners,
        )

        # raw_env, chdir, pythonpath: before any app loads, and (as in gunicorn) before
        # relative paths such as the pidfile are resolved.
        from django_prefork.server.upgrade import remember_start_directory

        remember_start_directory()  # a USR2 starts the new master where the operator did
        apply_process_settings(cfg)
        problems = startup_problems(cfg)
        if problems:
            raise CommandError(problems[0], returncode=EXIT_STARTUP_ERROR)
        app = None
        if cfg.preload_app:
            if cfg.worker_class == "gevent":
                # gevent must patch before Django is imported, which a fork of this process
                # cannot do: such workers always start as fresh interpreters.
                self.stderr.write("--preload is ignored with the gevent worker class.")
            else:
                app = self.load_app()
        try:  # after the app is loaded, so our handlers are wired last
            configure_logging(cfg)
        except LoggingSetupError as exc:
            raise CommandError(str(exc), returncode=EXIT_STARTUP_ERROR) from None
        try:
            # A new master of a binary upgrade (USR2) serves its old master's sockets.
            listeners = inherited_listeners() or systemd_listeners() or create_listeners(
                [parse_bind(b) for b in cfg.bind], cfg.backlog, umask=cfg.umask,
                reuse_port=cfg.reuse_port)
            metrics_listener = open_metrics_listener(cfg)
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
        from django_prefork.server.daemon import daemonize, should_daemonize

        if should_daemonize(cfg):
            if (cfg.errorlog or "-") == "-":
                self.stderr.write("--daemon: the error log is '-' (stderr), which the daemon "
                                  "sends to /dev/null; set --error-logfile to keep it.")
            # As gunicorn: detached first, so the banner's pid is the daemon's (the master).
            daemonize(cfg)
        self.print_banner(cfg, listeners, metrics_listener)
        if lean_master_possible(cfg, getattr(settings, "LOGGING", None)):
            # The same process, without Django.
            exec_lean_master(cfg, listeners, cli, metrics_listener)
        try:
            status = Arbiter(cfg, listeners, cli_overrides=cli, app=app,
                             metrics_listener=metrics_listener).run()
        except PidfileError as exc:  # another master took the pidfile since startup_problems
            raise CommandError(f"--pid (PIDFILE): {exc}", returncode=EXIT_STARTUP_ERROR) from None
        if status:
            sys.exit(status)

    def print_banner(self, cfg: Config, listeners: list[Any], metrics_listener: Any = None) -> None:
        import logging

        from django_prefork.logging import ERROR_LOGGER
        from django_prefork.workers import resolve_worker_class

        worker_class = resolve_worker_class(cfg.worker_class, cfg)  # sync + threads = gthread
        quit_command = "CTRL-BREAK" if sys.platform == "win32" else "CONTROL-C"
        self.stdout.write(f"django-prefork {__version__}, Django {django.get_version()}, "
                          f"using settings {settings.SETTINGS_MODULE!r}")
        self.stdout.flush()
        # The addresses go to the error log, as gunicorn's do: an --error-logfile keeps them.
        for listener in listeners:
            logging.getLogger(ERROR_LOGGER).info("Listening at: %s (pid %s)", listener.url(),
                                                 os.getpid())
        lines = [
            *([f"Metrics at: {metrics_listener.url()}/metrics"] if metrics_listener else []),
            f"Using worker: {worker_class}, {cfg.workers} "
            f"worker{'s' if cfg.workers != 1 else ''}"
            + (f", {cfg.threads} threads each" if worker_class == "gthread" else "")
            + (", app preloaded" if cfg.preload_app else ""),
            f"Quit the server with {quit_command} (SIGTERM stops gracefully).",
        ]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()


def startup_problems(cfg: Config) -> list[str]:
    """What would stop the server after binding, found before it: one line each.

    The pidfile's directory must exist and be writable, and no running process may own the
    pidfile already (a second master must not take over the first one's pidfile). Each log
    file must be writable, or its directory must be (nothing is created here).
    """
    from django_prefork.http.tls import tls_problem
    from django_prefork.server.daemon import daemon_problem
    from django_prefork.server.devreload import config_problems as reload_problems
    from django_prefork.server.pidfile import Pidfile
    from django_prefork.server.privileges import privilege_problems
    from django_prefork.server.upgrade import old_master_pid

    problems: list[str] = reload_problems(cfg)  # --reload with --preload, inotify, files
    problems += privilege_problems(cfg)
    daemon = daemon_problem(cfg, os.environ)
    if daemon:
        problems.append(daemon)
    tls = tls_problem(cfg)  # the certificate and key, read as every worker will read them
    if tls:
        problems.append(tls)
    for label, path in (("--error-logfile (ERRORLOG)", cfg.errorlog),
                        ("--access-logfile (ACCESSLOG)", cfg.accesslog)):
        if path and path != "-":
            why = _unwritable(path)
            if why:
                problems.append(f"{label} {path!r} cannot be opened: {why}. Fix: create its "
                                "directory, make it writable by this user, or use '-' for the "
                                "console.")
    if cfg.pidfile:
        where = f"--pid (PIDFILE) {cfg.pidfile!r}"
        directory = os.path.dirname(os.path.abspath(cfg.pidfile))
        owner = Pidfile(cfg.pidfile).read_live_pid()
        if not os.path.isdir(directory):
            problems.append(f"{where}: the directory {directory} does not exist. Fix: create "
                            "it, or choose a path in an existing directory.")
        elif not os.access(directory, os.W_OK | os.X_OK):
            problems.append(f"{where}: the directory {directory} is not writable by this user. "
                            "Fix: choose a directory this user may write to.")
        elif owner is not None and owner not in (os.getpid(), old_master_pid()):
            # (The old master of a USR2 upgrade owns it until it stops: we write PIDFILE.2.)
            problems.append(f"{where} names process {owner}, which is running: another server "
                            "owns this pidfile. Fix: stop that server, or choose another path.")
    return problems


def _unwritable(path: str) -> str | None:
    """Why this user cannot append to ``path``, or None (an approximation of open("a"))."""
    if os.path.isdir(path):
        return "it is a directory"
    if os.path.exists(path):
        return None if os.access(path, os.W_OK) else "it is not writable by this user"
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        return f"the directory {directory} does not exist"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"the directory {directory} is not writable by this user"
    return None
