"""Signals an operator may send the master: none of them ends it by its default action."""

from __future__ import annotations

import os
import re
import signal

import pytest

from server import Server, pid_alive, wait_until

pytestmark = pytest.mark.integration

# start_new_session: no controlling terminal, as under systemd or Docker. In a terminal's
# foreground the master ignores WINCH (a window resize sends it), see test_winch_in_terminal.
DETACHED = {"start_new_session": True}


def test_stray_signals_are_logged_and_the_master_keeps_serving():
    server = Server("--workers", "1")
    try:
        server.start(**DETACHED)
        (worker,) = server.ready_workers()
        strays = [signal.SIGPIPE, signal.SIGALRM, signal.SIGVTALRM, signal.SIGPROF,
                  signal.SIGXCPU, signal.SIGXFSZ, signal.SIGPWR, signal.SIGIO,
                  signal.SIGRTMIN + 3]
        for sig in strays:
            start = len(server.lines)
            server.signal(sig)
            name = ("rtmin+3" if sig == signal.SIGRTMIN + 3
                    else signal.Signals(sig).name[3:].lower())
            server.wait_for_line(rf"Ignoring signal {re.escape(name)}: .* keeps serving",
                                 start=start)
        assert server.proc is not None and server.proc.poll() is None
        assert server.get("/hello")[0] == 200
        # The workers were never told anything: the same worker still serves.
        assert server.ready_workers() == [worker]
    finally:
        server.stop()


def test_repeated_stray_signal_is_logged_once_per_interval():
    server = Server("--workers", "1")
    try:
        server.start(wait_workers=1, **DETACHED)  # the master's handlers are in place
        server.signal(signal.SIGALRM)
        server.wait_for_line(r"Ignoring signal alrm")
        for _ in range(4):  # one at a time, so that none merges with a pending one
            mark = len(server.lines)
            server.signal(signal.SIGALRM)
            server.signal(signal.SIGUSR1)
            server.wait_for_line(r"Handling signal: usr1", start=mark)
        assert server.output.count("Ignoring signal alrm") == 1
        assert server.proc is not None and server.proc.poll() is None
    finally:
        server.stop()


def test_stray_signal_during_startup_waits_for_the_masters_handlers():
    """From the banner on, a signal is held until the master can handle it, instead of
    ending the process by its default action (here while the lean master starts)."""
    server = Server("--workers", "1")
    try:
        server.start(wait_workers=None, **DETACHED)
        server.wait_for_line(r"Listening at:")  # printed by the command, before the execve
        server.signal(signal.SIGALRM)
        server.wait_for_line(r"Ignoring signal alrm")
        server.wait_booted(1)
        assert server.proc is not None and server.proc.poll() is None
    finally:
        server.stop()


def test_winch_stops_the_workers_and_keeps_the_master_then_ttin_and_hup_restart_them():
    server = Server("--workers", "2")
    try:
        server.start(wait_workers=2, **DETACHED)
        workers = server.ready_workers()
        server.signal(signal.SIGWINCH)
        server.wait_for_line(r"Stopping all workers gracefully \(WINCH\)")
        wait_until(lambda: not any(pid_alive(pid) for pid in workers),
                   timeout=30, message="the workers to exit after WINCH")
        assert server.worker_pids() == []
        assert server.proc is not None and server.proc.poll() is None
        # The master stays at zero workers ...
        start = len(server.lines)
        server.signal(signal.SIGUSR1)
        server.wait_for_line(r"Handling signal: usr1", start=start)
        assert server.worker_pids() == []
        # ... TTOU does not take it below zero nor start one ...
        start = len(server.lines)
        server.signal(signal.SIGTTOU)
        server.signal(signal.SIGUSR1)
        server.wait_for_line(r"Handling signal: usr1", start=start)
        assert server.worker_pids() == []
        assert "Booting worker" not in "\n".join(server.lines[start:])
        # ... until TTIN asks for one ...
        server.signal(signal.SIGTTIN)
        wait_until(lambda: len(server.ready_workers()) == 1, timeout=30,
                   message="one worker after TTIN")
        assert server.get("/hello")[0] == 200
        # ... and a HUP brings back the configured number.
        server.signal(signal.SIGWINCH)
        wait_until(lambda: server.worker_pids() == [], timeout=30,
                   message="no worker after the second WINCH")
        server.signal(signal.SIGHUP)
        wait_until(lambda: len(server.ready_workers()) == 2, timeout=60,
                   message="two workers after HUP")
        assert server.get("/hello")[0] == 200
    finally:
        server.stop()


def test_winch_in_a_terminal_foreground_is_ignored():
    """A terminal resize sends WINCH to its foreground group: that must not stop workers."""
    master_fd, slave_fd = os.openpty()

    def take_terminal() -> None:  # in the child: a session whose terminal is the pty
        import fcntl
        import termios

        os.setsid()
        fcntl.ioctl(slave_fd, termios.TIOCSCTTY, 0)

    server = Server("--workers", "1")
    try:
        server.start(preexec_fn=take_terminal, pass_fds=(slave_fd,))
        os.close(slave_fd)
        (worker,) = server.ready_workers()
        server.signal(signal.SIGWINCH)
        server.wait_for_line(r"WINCH ignored: the master runs in the foreground of a terminal")
        assert server.ready_workers() == [worker]
        assert server.get("/hello")[0] == 200
    finally:
        server.stop()
        os.close(master_fd)
