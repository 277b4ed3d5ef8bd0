"""--reload through `runprefork`: the test edits a view, a template and an extra file of a
small project written into tmp_path, and waits until the server serves the change.

Each engine (poll, inotify) runs the same story: an edit is served; a SyntaxError is one log
line and the old code serves on (no reload loop); the fixed save is served.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from server import Server, children_of, is_zygote, wait_until

pytestmark = pytest.mark.integration

#: Generous for a shared 2-core machine; the time each edit took is printed (pytest -s).
SERVE_DEADLINE = 15.0

VIEWS = '''\
from django.http import HttpResponse
from django.template.loader import render_to_string

TEXT = "{text}"


def text(request):
    return HttpResponse(TEXT, content_type="text/plain")


def page(request):
    return HttpResponse(render_to_string("page.html"), content_type="text/plain")


def lazy(request):
    import devlazy  # first imported here: by a request, in a worker

    return HttpResponse(devlazy.WORD, content_type="text/plain")
'''


class Project:
    """A settings module, URLconf, views and a template in tmp_path, all editable."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.views = root / "devviews.py"
        self.lazy = root / "devlazy.py"
        self.template = root / "templates" / "page.html"
        self.extra = root / "extra" / "service.yaml"
        (root / "templates").mkdir()
        (root / "extra").mkdir()
        (root / "devsettings.py").write_text(
            "from testproject.settings import *  # noqa: F403\n"
            "ROOT_URLCONF = 'devurls'\n"
            f"TEMPLATES = [{{'BACKEND': 'django.template.backends.django.DjangoTemplates',"
            f" 'DIRS': [{str(root / 'templates')!r}]}}]\n")
        (root / "devurls.py").write_text(
            "from django.urls import path\n\nimport devviews\n\n"
            "urlpatterns = [path('text', devviews.text), path('page', devviews.page),\n"
            "               path('lazy', devviews.lazy)]\n")
        self.write_views("first")
        self.lazy.write_text('WORD = "one"\n')
        self.template.write_text("page one\n")
        self.extra.write_text("answer: 1\n")

    def write_views(self, text: str, extra: str = "") -> None:
        self.views.write_text(VIEWS.format(text=text) + extra)

    def server(self, *args: str) -> Server:
        server = Server("--reload", *args, settings="devsettings")
        server.env["PYTHONPATH"] = os.pathsep.join([str(self.root), server.env["PYTHONPATH"]])
        # Edits within a second of each other can keep a file's size: a cached .pyc (keyed
        # on whole-second mtime and size) would then be reused.
        server.env["PYTHONDONTWRITEBYTECODE"] = "1"
        return server


def start_watching(server: Server) -> None:
    """Start, and wait until the master watches the first generation's files: its workers
    can boot before the master has read the list (a probe's, or a zygote's when the master
    is slow), and an edit made before it is read is the state watched from."""
    server.start()
    server.wait_for_line(r"Watching \d+ files and \d+ patterns for changes",
                         timeout=SERVE_DEADLINE)


def body(server: Server, path: str) -> str:
    status, _, data = server.get(path)
    assert status == 200, (status, data)
    return data.decode()


def served_within(server: Server, path: str, expected: str, what: str) -> float:
    """Wait until `path` serves `expected`; return (and print) how long it took."""
    started = time.monotonic()
    wait_until(lambda: expected in body(server, path), timeout=SERVE_DEADLINE, interval=0.05,
               message=f"{expected!r} at {path} after {what}; output:\n{server.output}")
    elapsed = time.monotonic() - started
    print(f"{what}: served after {elapsed:.2f} s")
    return elapsed


@pytest.mark.parametrize("engine", ["poll", "inotify"])
def test_edits_are_served_and_a_syntax_error_keeps_the_old_code(tmp_path: Path, engine: str):
    project = Project(tmp_path)
    pattern = str(tmp_path / "extra" / "*.yaml")
    with project.server("--reload-engine", engine, "--reload-extra-file", pattern) as server:
        start_watching(server)
        assert body(server, "/text") == "first"

        mark = len(server.lines)
        project.write_views("second")
        served_within(server, "/text", "second", f"{engine}: view edited")
        server.wait_for_line(rf"Change detected in {re.escape(str(project.views))}",
                             timeout=SERVE_DEADLINE, start=mark)
        server.wait_for_line(r"Reload complete", timeout=SERVE_DEADLINE, start=mark)

        # Rendered once first: the worker's cached template loader (DEBUG off) holds it.
        assert body(server, "/page") == "page one\n"
        mark = len(server.lines)
        project.template.write_text("page two\n")
        served_within(server, "/page", "page two", f"{engine}: template edited")
        server.wait_for_line(rf"Change detected in {re.escape(str(project.template))}",
                             timeout=SERVE_DEADLINE, start=mark)
        server.wait_for_line(r"Reload complete", timeout=SERVE_DEADLINE, start=mark)

        mark = len(server.lines)
        project.write_views("third", extra="\ndef broken(:\n")
        line = server.wait_for_line(r"Reload aborted", timeout=SERVE_DEADLINE, start=mark).string
        assert "SyntaxError" in line and "devviews.py" in line, line
        # No reload loop: the broken file is not tried again until it changes; the old code
        # serves on meanwhile, and no traceback is printed (the one line says it all).
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert body(server, "/text") == "second"
            time.sleep(0.1)
        after = server.lines[mark:]
        assert sum("Reload aborted" in line for line in after) == 1, after
        assert sum("Change detected" in line for line in after) == 1, after
        assert not any("Traceback" in line for line in after), after

        project.write_views("fourth")
        served_within(server, "/text", "fourth", f"{engine}: syntax error fixed")

        mark = len(server.lines)
        project.extra.write_text("answer: 2\n")
        server.wait_for_line(rf"Change detected in {re.escape(str(project.extra))}",
                             timeout=SERVE_DEADLINE, start=mark)
        server.wait_for_line(r"Reload complete", timeout=SERVE_DEADLINE, start=mark)
        assert body(server, "/text") == "fourth"


@pytest.mark.parametrize("worker_class", ["gthread", "gevent"])
def test_every_worker_class_reloads(tmp_path: Path, worker_class: str):
    project = Project(tmp_path)
    with project.server("-k", worker_class) as server:
        server.start()
        server.wait_for_line(r"Watching \d+ files and \d+ patterns for changes "
                             r"\(--reload, inotify\)")  # auto: inotify on Linux
        project.write_views("edited")
        served_within(server, "/text", "edited", f"auto, {worker_class}: view edited")


@pytest.mark.parametrize(("worker_class", "engine"),
                         [("sync", "poll"), ("gthread", "inotify"), ("gevent", "auto")])
def test_a_module_first_imported_by_a_request_is_watched(tmp_path: Path, worker_class: str,
                                                        engine: str):
    """A module no one imports until a view does (in a worker, after the zygote listed the
    files): the worker reports it to the master, so editing it reloads, as with runserver."""
    project = Project(tmp_path)
    with project.server("-k", worker_class, "--reload-engine", engine,
                        "--log-level", "debug") as server:
        start_watching(server)
        mark = len(server.lines)
        assert body(server, "/lazy") == "one"
        line = server.wait_for_line(r"Worker \d+ imported \d+ more files: watching them too",
                                    timeout=SERVE_DEADLINE, start=mark)
        # The master stats the file when it adopts it, just after that line: editing it
        # before would make the edited file the one watched from. Its next line says done.
        server.wait_for_line(r"Watching \d+ files and \d+ patterns for changes",
                             timeout=SERVE_DEADLINE, start=server.lines.index(line.string))
        # gthread reports imports from its loop thread while the request runs: the batch
        # seen may be an earlier one than devlazy's, so save again until it is watched.
        mark = len(server.lines)
        detected = rf"Change detected in {re.escape(str(project.lazy))}"

        def edited_and_seen() -> bool:
            project.lazy.write_text('WORD = "two"\n')
            with contextlib.suppress(AssertionError):
                return bool(server.wait_for_line(detected, timeout=2, start=mark))
            return False

        wait_until(edited_and_seen, timeout=SERVE_DEADLINE, message="the lazy module's edit")
        served_within(server, "/lazy", "two", f"{engine}, {worker_class}: lazy module edited")


def test_a_new_file_that_fails_to_import_is_watched_until_fixed(tmp_path: Path):
    """The failed attempt's own files stay watched: views now import a new module with a
    SyntaxError; saving the fixed module (not the views) reloads."""
    project = Project(tmp_path)
    helper = tmp_path / "devhelper.py"
    with project.server("--reload-engine", "poll") as server:
        start_watching(server)
        mark = len(server.lines)
        helper.write_text("WORD = (\n")
        project.write_views("unused", extra="\nfrom devhelper import WORD\nTEXT = WORD\n")
        line = server.wait_for_line(r"Reload aborted", timeout=SERVE_DEADLINE, start=mark).string
        assert "devhelper.py" in line, line
        assert body(server, "/text") == "first"

        helper.write_text("WORD = 'from the helper'\n")
        served_within(server, "/text", "from the helper", "poll: the new module fixed")


def test_a_master_that_keeps_django_lists_the_first_generations_files(tmp_path: Path):
    """A project LOGGING that routes our loggers keeps Django in the master, which forks the
    first generation itself: no zygote reports its files, so the master lists them."""
    project = Project(tmp_path)
    with (tmp_path / "devsettings.py").open("a") as f:
        f.write("LOGGING = {'version': 1, 'handlers': {'console': "
                "{'class': 'logging.StreamHandler'}}, 'loggers': {'django_prefork': "
                "{'handlers': ['console'], 'level': 'INFO', 'propagate': False}}}\n")
    with project.server("--reload-engine", "poll") as server:
        start_watching(server)
        assert not any(is_zygote(pid) for pid in children_of(server.pid))  # forked by it
        project.write_views("edited")
        served_within(server, "/text", "edited", "poll, master with Django: view edited")


def test_exec_workers_have_their_files_listed_by_a_probe(tmp_path: Path):
    """Without zygotes (DJANGO_PREFORK_NO_ZYGOTE: the path of a platform with no child
    subreaper) the lean master execs each worker: a probe lists the first generation's files."""
    project = Project(tmp_path)
    server = project.server("--reload-engine", "poll")
    server.env["DJANGO_PREFORK_NO_ZYGOTE"] = "1"
    with server:
        start_watching(server)
        project.write_views("edited")
        served_within(server, "/text", "edited", "poll, exec workers: view edited")


def test_reload_with_preload_is_refused_in_one_line(tmp_path: Path):
    project = Project(tmp_path)
    server = project.server("--preload")
    with server:
        server.start(wait_workers=None)
        code = server.wait_exit(timeout=60)
        assert code != 0
        lines = [line for line in server.lines if "--preload" in line]
        assert len(lines) == 1, server.output
        assert "--reload" in lines[0] and "Fix:" in lines[0], lines[0]
        assert "Listening at" not in server.output


def test_a_missing_extra_file_is_refused_in_one_line(tmp_path: Path):
    project = Project(tmp_path)
    missing = str(tmp_path / "no-such.yaml")
    with project.server("--reload-extra-file", missing) as server:
        server.start(wait_workers=None)
        assert server.wait_exit(timeout=60) != 0
        lines = [line for line in server.lines if "--reload-extra-file" in line]
        assert len(lines) == 1 and missing in lines[0] and "Fix:" in lines[0], server.output


def test_a_long_watch_list_is_split_into_messages_the_master_can_read():
    """A control-socket message is read into a 64 KiB buffer: a project with thousands of
    long paths is sent in pieces, each of which parses, and together they are the list."""
    from django_prefork.server.devreload import WatchList
    from django_prefork.workers.reloadfiles import split

    files = frozenset(f"/srv/{'deep/' * 20}module_{n}.py" for n in range(3000))
    messages = split(WatchList(files, frozenset({"/srv/templates/**/*"})))
    assert len(messages) > 1 and all(len(m) < 65536 - 1 for m in messages)
    parts = [WatchList.from_json(json.loads(m)) for m in messages]
    assert frozenset().union(*(p.files for p in parts)) == files
    assert frozenset().union(*(p.globs for p in parts)) == {"/srv/templates/**/*"}


def test_an_inotify_engine_that_cannot_be_set_up_is_refused_in_one_line(monkeypatch):
    from django_prefork.conf import load_config
    from django_prefork.server import devreload

    monkeypatch.setattr(devreload, "inotify_problem", lambda: "inotify_init1 failed: EMFILE")
    cfg = load_config(cli={"reload": True, "reload_engine": "inotify"})
    (problem,) = devreload.config_problems(cfg)
    assert "--reload-engine inotify" in problem and "EMFILE" in problem
    assert "Fix: use --reload-engine poll" in problem and "\n" not in problem
    # auto falls back to polling instead
    assert devreload.config_problems(cfg.replace(reload_engine="auto")) == []


def test_import_reports_are_read_line_by_line_and_once(tmp_path: Path, monkeypatch):
    """The worker's side appends whole lines after the heartbeat's bytes; the master's side
    reads each path once, and leaves a line still being written for its next look."""
    import importlib

    from django_prefork.workers.importwatch import REPORT_OFFSET, ImportReporter, read_reports

    fd = os.open(tmp_path / "heartbeat", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"R", 0)  # the heartbeat's ready byte stays where it is
        reporter = ImportReporter(fd)
        assert reporter.report_new() == 0 and read_reports(fd, REPORT_OFFSET) == (
            [], REPORT_OFFSET)
        module = tmp_path / "imported_late.py"
        module.write_text("")
        monkeypatch.syspath_prepend(str(tmp_path))
        importlib.import_module("imported_late")
        assert reporter.report_new() == 1
        assert reporter.report_new() == 0  # nothing new since
        paths, offset = read_reports(fd, REPORT_OFFSET)
        assert paths == [str(module.resolve())] and offset > REPORT_OFFSET
        assert read_reports(fd, offset) == ([], offset)  # read once
        os.pwrite(fd, b"/half/written", offset)
        assert read_reports(fd, offset) == ([], offset)
        os.pwrite(fd, b"/half/written.py\n", offset)
        assert read_reports(fd, offset)[0] == ["/half/written.py"]
        assert os.pread(fd, 1, 0) == b"R"
    finally:
        os.close(fd)
        sys.modules.pop("imported_late", None)


def test_a_worker_that_imported_too_much_says_so_once_and_stops_reporting(
        tmp_path: Path, monkeypatch, caplog):
    """The report area is bounded (REPORT_LIMIT): past it, one warning, and nothing more is
    written, so a worker that imports without end cannot grow its heartbeat file."""
    import importlib
    import logging

    from django_prefork.workers import importwatch

    monkeypatch.setattr(importwatch, "REPORT_LIMIT", 10)
    monkeypatch.syspath_prepend(str(tmp_path))
    fd = os.open(tmp_path / "heartbeat", os.O_RDWR | os.O_CREAT, 0o600)
    names = ("imported_big_a", "imported_big_b")
    try:
        reporter = importwatch.ImportReporter(fd)
        for name in names:
            (tmp_path / f"{name}.py").write_text("")
        with caplog.at_level(logging.WARNING, logger="django_prefork.error"):
            importlib.import_module(names[0])
            assert reporter.report_new() == 0
            importlib.import_module(names[1])
            assert reporter.report_new() == 0
        warnings = [r for r in caplog.records if "more files than it can report" in r.message]
        assert len(warnings) == 1, caplog.records
        assert os.fstat(fd).st_size == 0  # nothing was written
    finally:
        os.close(fd)
        for name in names:
            sys.modules.pop(name, None)
