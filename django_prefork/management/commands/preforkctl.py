"""`manage.py preforkctl SUBCOMMAND`: ask a running runprefork master over its control socket.

Finds the socket from `--control-socket`, `--pid` or `--pidfile`, else from the project's
PREFORK (CONTROL_SOCKET, then PIDFILE), else the one master of this user it can find. The
protocol and the default paths live in server/control.py; this file only finds, asks and
prints. Every failure is one line and a non-zero exit.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_prefork.server.control import (
    COMMANDS,
    RUNTIME_SUBDIR,
    SUFFIX,
    ControlClientError,
    ask,
    candidate_paths,
    pid_exists,
    private_dir,
)

EXIT_FAILED = 1
_HELP = {
    "status": "workers: pid, age, requests served, PSS, the request being served now",
    "reload": "reload code and settings, replacing the workers gracefully (HUP)",
    "add-worker": "one worker more (TTIN)",
    "remove-worker": "one worker less, never below one (TTOU)",
    "stop": "stop gracefully, finishing requests in flight (TERM; --quick: QUIT)",
    "reopen-logs": "reopen the log files (USR1)",
    "upgrade": "start a new master on the same sockets (USR2)",
}


class Command(BaseCommand):
    help = "Control a running django-prefork server: " + "; ".join(
        f"{name}: {text}" for name, text in _HELP.items())
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("subcommand", choices=COMMANDS, metavar="SUBCOMMAND",
                            help="one of " + ", ".join(COMMANDS))
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--pid", type=int, metavar="PID", help="the master's process id")
        where.add_argument("--pidfile", metavar="PATH", help="the master's pidfile (--pid)")
        where.add_argument("--control-socket", metavar="PATH",
                           help="the master's control socket (its --control-socket)")
        parser.add_argument("--json", action="store_true", help="print the answer as JSON")
        parser.add_argument("--quick", action="store_true",
                            help="with stop: stop at once, without finishing requests (QUIT)")
        parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                            help="how long to wait for the master's answer (default 10)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["quick"] and options["subcommand"] != "stop":
            raise CommandError("--quick goes with stop only", returncode=EXIT_FAILED)
        path = self.find_socket(options)
        request: dict[str, Any] = {"command": options["subcommand"]}
        if self.expected_pid is not None:
            request["pid"] = self.expected_pid  # the master refuses if it is another one
        if options["quick"]:
            request["quick"] = True
        try:
            answer = ask(path, request, timeout=options["timeout"])
        except ControlClientError as exc:
            raise CommandError(str(exc), returncode=EXIT_FAILED) from None
        if not answer.get("ok"):
            raise CommandError(f"the master refused: {answer.get('error', 'no reason given')}",
                               returncode=EXIT_FAILED)
        if options["subcommand"] == "status":
            add_memory(answer)
        if options["json"]:
            self.stdout.write(json.dumps(answer, indent=2))
        elif options["subcommand"] == "status":
            self.stdout.write(format_status(answer))
        else:
            master = f" to master {options['pid']}" if options.get("pid") else ""
            self.stdout.write(f"{options['subcommand']}: sent {answer['signal']}{master}")

    # -- finding the master ----------------------------------------------------------------
    expected_pid: int | None = None

    def find_socket(self, options: dict[str, Any]) -> str:
        """The socket's path; sets expected_pid when the master was named by its pid."""
        if options["control_socket"]:
            return str(options["control_socket"])
        prefork = getattr(settings, "PREFORK", None) or {}
        if not isinstance(prefork, dict):
            prefork = {}
        if options["pidfile"]:
            self.expected_pid = read_pidfile(options["pidfile"])
        elif options["pid"] is not None:
            self.expected_pid = options["pid"]
        elif prefork.get("CONTROL_SOCKET"):
            return str(prefork["CONTROL_SOCKET"])
        elif prefork.get("PIDFILE"):
            self.expected_pid = read_pidfile(str(prefork["PIDFILE"]))
        else:
            return only_master_socket()
        return socket_for_pid(self.expected_pid)


def _fail(message: str) -> CommandError:
    return CommandError(message, returncode=EXIT_FAILED)


def read_pidfile(path: str) -> int:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError as exc:
        raise _fail(f"cannot read the pidfile {path}: {exc.strerror}") from None
    if not text.isdigit():
        raise _fail(f"the pidfile {path} holds no process id ({text[:20]!r})")
    return int(text)


def socket_for_pid(pid: int) -> str:
    """The control socket of master `pid` at its default (per-pid) place."""
    if pid <= 0:
        raise _fail(f"--pid {pid}: a process id is a number above 0")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise _fail(f"no process with pid {pid}") from None
    except PermissionError:
        pass  # another user's: the socket's mode decides
    for path in candidate_paths(pid):
        if os.path.exists(path):
            return path
    raise _fail(f"process {pid} has no control socket (looked for "
                f"{', '.join(candidate_paths(pid))}): is it a runprefork master, started "
                "without --no-control-socket? With --control-socket, pass that path")


def only_master_socket() -> str:
    """With nothing to go on: the one live master of this user, if there is just one."""
    places = [os.path.join(private_dir(os.getuid()), f"*{SUFFIX}")]
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime:
        places.insert(0, os.path.join(runtime, RUNTIME_SUBDIR, f"*{SUFFIX}"))
    found: dict[int, str] = {}
    for place in places:
        for path in sorted(glob.glob(place)):
            stem = os.path.basename(path)[:-len(SUFFIX)]
            if stem.isdigit() and int(stem) not in found and pid_exists(int(stem)):
                found[int(stem)] = path
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        raise _fail("no running django-prefork master found for this user. Fix: pass --pid, "
                    "--pidfile or --control-socket")
    raise _fail(f"{len(found)} masters are running (pids {', '.join(map(str, found))}). "
                "Fix: pass --pid PID")



# -- memory (read here, not in the master: see status_report) ------------------------------
def pss_bytes(pid: int) -> int | None:
    """Proportional set size of `pid` (its share of shared pages), from smaps_rollup."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def add_memory(answer: dict[str, Any]) -> None:
    """Add each process's PSS (bytes, None where unreadable) and the total to a status."""
    master = answer["master"]
    master["pss"] = pss_bytes(master["pid"])
    total = master["pss"] or 0
    for worker in answer["workers"]:
        worker["pss"] = pss_bytes(worker["pid"])
        total += worker["pss"] or 0
    answer["totals"]["pss"] = total


# -- the table -----------------------------------------------------------------------------
def format_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_bytes(size: int | None) -> str:
    if size is None:
        return "?"
    return f"{size / (1 << 20):.1f} MiB"


def format_status(answer: dict[str, Any]) -> str:
    master, workers, totals = answer["master"], answer["workers"], answer["totals"]
    state = ", stopping" if master["stopping"] else ""
    lines = [f"master {master['pid']}: up {format_age(master['age'])}, generation "
             f"{master['generation']}, {master['workers_wanted']} workers wanted{state}, PSS "
             f"{format_bytes(master['pss'])}", ""]
    rows = [("PID", "AGE", "REQUESTS", "PSS", "SERVING NOW")]
    for worker in workers:
        flags = "" if worker["booted"] else " (booting)"
        if worker["retiring"]:
            flags += " (retiring)"
        serving = worker["serving"]
        now = (f"{serving[0]['request']} ({format_age(serving[0]['seconds'])})"
               if serving else ("-" if not worker["in_flight"] else
                                f"{worker['in_flight']} request(s)"))
        rows.append((str(worker["pid"]), format_age(worker["age"]), str(worker["requests"]),
                     format_bytes(worker["pss"]), now + flags))
        for more in serving[1:]:
            rows.append(("", "", "", "", f"{more['request']} ({format_age(more['seconds'])})"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        lines.append("  ".join(
            [*(cell.rjust(w) if i in (1, 2, 3) else cell.ljust(w)
               for i, (cell, w) in enumerate(zip(row[:4], widths, strict=True))), row[4]]
        ).rstrip())
    lines.append("")
    lines.append(f"total: {totals['workers']} workers, {totals['requests']} requests served, "
                 f"{totals['in_flight']} in flight, PSS {format_bytes(totals['pss'])} "
                 "(master and workers)")
    return "\n".join(lines)
