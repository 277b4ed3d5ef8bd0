"""The repository's Dockerfile (docker itself is not usable here): its instructions are
parsed and checked for the properties a container needs, and its CMD and HEALTHCHECK are run
for real, with the image's environment, against the demo project."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass

import pytest
from deploykit import free_port

from server import LISTEN_RE, REPO_ROOT, children_of, pid_alive, wait_until

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
DEPLOYMENT_MD = REPO_ROOT / "docs" / "deployment.md"


@dataclass
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON list of an exec-form CMD/ENTRYPOINT; fails for the shell form."""
        value = json.loads(self.args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self.args
        return value


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continuation are removed by docker too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continuation line"
    return instructions


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    """ENV KEY=VALUE ... pairs (the only ENV form the Dockerfile uses)."""
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ENV":
            for pair in ins.args.split():
                key, sep, value = pair.partition("=")
                assert sep, f"ENV {ins.args!r}: use KEY=VALUE"
                env[key] = value.strip("'\"")
    return env


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def _one(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def test_runs_as_a_non_root_user_created_in_the_image(instructions):
    keywords = [i.keyword for i in instructions]
    user = _one(instructions, "USER").args
    assert user not in ("root", "0") and not user.startswith(("root:", "0:"))
    created = any(i.keyword == "RUN" and re.search(rf"useradd\b.*\b{re.escape(user)}$",
                                                   i.args.split("&&")[0].strip())
                  for i in instructions)
    assert created, f"USER {user} is not created by a RUN useradd"
    # nothing after USER needs root, and the server starts after it
    assert keywords.index("USER") < keywords.index("CMD")
    assert "RUN" not in keywords[keywords.index("USER"):]


def test_cmd_is_exec_form_so_signals_reach_the_master(instructions):
    assert not any(i.keyword == "ENTRYPOINT" for i in instructions)
    cmd = _one(instructions, "CMD").exec_form()
    assert cmd[:3] == ["python", "manage.py", "runprefork"]
    assert _one(instructions, "STOPSIGNAL").args == "SIGTERM"


def test_healthcheck_probes_live_in_exec_form(instructions):
    health = _one(instructions, "HEALTHCHECK").args
    options, _, command = health.partition("CMD ")
    assert re.search(r"--interval=\d+s", options) and re.search(r"--timeout=\d+s", options)
    probe = json.loads(command)
    assert "/-/live" in " ".join(probe)
    assert "--health-on-main-bind" in _one(instructions, "CMD").exec_form()


def test_the_port_is_the_one_exposed_and_bound_on_all_interfaces(instructions):
    env = env_of(instructions)
    assert _one(instructions, "EXPOSE").args == env["PORT"]
    # PORT means 0.0.0.0:PORT (as gunicorn), reachable from outside the container; a
    # --bind in CMD would override it, so none is given.
    assert "--bind" not in _one(instructions, "CMD").exec_form()


def test_copied_paths_exist_and_are_not_ignored(instructions):
    ignored = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for ins in instructions:
        if ins.keyword != "COPY":
            continue
        *sources, _dest = ins.args.split()
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"COPY {source}: no such file"
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), \
                f"COPY {source} is excluded by .dockerignore"
    for secret in (".env", ".git", ".venv", "demo_project/db.sqlite3"):
        assert secret in ignored


def test_the_docs_show_this_dockerfile_and_explain_each_instruction(instructions):
    doc = DEPLOYMENT_MD.read_text()
    blocks = re.findall(r"```dockerfile\n(.*?)```", doc, re.DOTALL)
    assert DOCKERFILE.read_text() in blocks, "docs/deployment.md must show the Dockerfile"
    section = doc[doc.index("### The Dockerfile, line by line"):]
    for keyword in {i.keyword for i in instructions}:
        assert f"`{keyword}" in section, f"docs/deployment.md does not explain {keyword}"


@pytest.mark.integration
def test_cmd_serves_the_healthcheck_passes_and_stopsignal_stops(instructions, tmp_path):
    """The image's CMD, with the image's ENV, run here: the HEALTHCHECK command succeeds
    against it, and STOPSIGNAL ends it with status 0."""
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)  # manage.py's default, as in the image
    env.update(env_of(instructions))
    port = free_port()
    env.update({"PORT": str(port), "DJANGO_SQLITE_PATH": str(tmp_path / "db.sqlite3"),
                "DJANGO_STATIC_ROOT": str(tmp_path / "static")})
    # the build's own manage.py steps (collectstatic), as the image runs them
    for ins in instructions:
        if ins.keyword == "RUN" and ins.args.startswith("python manage.py "):
            step = subprocess.run([sys.executable, *ins.args.split()[1:]], cwd=REPO_ROOT,
                                  env=env, capture_output=True, text=True, timeout=300,
                                  stdin=subprocess.DEVNULL)
            assert step.returncode == 0, f"RUN {ins.args}:\n{step.stdout}{step.stderr}"
    # the build's own manage.py steps (collectstatic), as the image runs them
    for ins in instructions:
        if ins.keyword == "RUN" and ins.args.startswith("python manage.py "):
            step = subprocess.run([sys.executable, *ins.args.split()[1:]], cwd=REPO_ROOT,
                                  env=env, capture_output=True, text=True, timeout=300,
                                  stdin=subprocess.DEVNULL)
            assert step.returncode == 0, f"RUN {ins.args}:\n{step.stdout}{step.stderr}"
    cmd = _one(instructions, "CMD").exec_form()
    probe = json.loads(_one(instructions, "HEALTHCHECK").args.partition("CMD ")[2])
    python = sys.executable
    proc = subprocess.Popen([python, *cmd[1:]], cwd=REPO_ROOT, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    workers: list[int] = []
    try:
        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"CMD exited with {proc.returncode}:\n"
                                     f"{proc.communicate()[0]}")
            result = subprocess.run([python, *probe[1:]], env=env, capture_output=True,
                                    timeout=30, stdin=subprocess.DEVNULL)
            return result.returncode == 0

        wait_until(healthy, timeout=60, interval=0.2, message="the HEALTHCHECK to pass")
        def booted() -> bool:
            workers[:] = children_of(proc.pid)
            return len(workers) >= int(env["WEB_CONCURRENCY"])

        wait_until(booted, timeout=30, message="WEB_CONCURRENCY workers")
        proc.send_signal(getattr(signal, _one(instructions, "STOPSIGNAL").args))
        output, _ = proc.communicate(timeout=40)
        assert proc.returncode == 0, output
        assert LISTEN_RE.search(output) and f"0.0.0.0:{port}" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for pid in workers:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
