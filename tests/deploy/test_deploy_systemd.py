"""The systemd units of docs/deployment.md, taken from the page as they stand: a small
parser checks their sections, keys and the settings the server relies on, and
`systemd-analyze verify` checks them where it is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from server import REPO_ROOT

DEPLOYMENT_MD = REPO_ROOT / "docs" / "deployment.md"
SECTION = "## systemd: socket activation"
VENV_PYTHON = "/srv/mysite/.venv/bin/python"

#: The keys each section may use here (systemd.unit(5), systemd.service(5),
#: systemd.socket(5), systemd.exec(5), systemd.kill(5)): a misspelt key is a silent no-op
#: for systemd, so it must fail here.
KNOWN_KEYS = {
    "Unit": {"Description", "Documentation", "Requires", "Wants", "After", "Before",
             "PartOf", "BindsTo"},
    "Service": {"Type", "NotifyAccess", "User", "Group", "WorkingDirectory", "Environment",
                "EnvironmentFile", "ExecStart", "ExecReload", "ExecStop", "KillMode",
                "KillSignal", "TimeoutStartSec", "TimeoutStopSec", "Restart", "RestartSec",
                "NoNewPrivileges", "PrivateTmp", "ProtectSystem", "ProtectHome",
                "RuntimeDirectory", "UMask", "PIDFile"},
    "Socket": {"ListenStream", "SocketUser", "SocketGroup", "SocketMode", "Backlog",
               "Accept", "ReusePort", "Service"},
    "Install": {"WantedBy", "RequiredBy", "Also"},
}


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (a key may repeat); raises ValueError on bad syntax."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            match = re.fullmatch(r"\[([A-Za-z]+)\]", line)
            if not match:
                raise ValueError(f"line {number}: bad section header {line!r}")
            name = match.group(1)
            if name in sections:
                raise ValueError(f"line {number}: section [{name}] twice")
            current = sections[name] = {}
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()):
            raise ValueError(f"line {number}: expected Key=Value, got {line!r}")
        if current is None:
            raise ValueError(f"line {number}: {key.strip()}= before any section")
        if raw.rstrip().endswith("\\"):
            raise ValueError(f"line {number}: continuation lines are not used here")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def doc_units() -> dict[str, str]:
    """unit file name -> text, from the section of docs/deployment.md."""
    doc = DEPLOYMENT_MD.read_text()
    start = doc.index(SECTION)
    end = doc.find("\n## ", start + len(SECTION))
    section = doc[start:end if end >= 0 else None]
    found = re.findall(r"`/etc/systemd/system/([\w.-]+)`:\n\n```ini\n(.*?)```", section,
                       re.DOTALL)
    units = dict(found)
    assert len(units) == len(found), "a unit appears twice in the section"
    return units


@pytest.fixture(scope="module")
def units() -> dict[str, str]:
    units = doc_units()
    assert set(units) == {"mysite.service", "mysite.socket"}
    return units


def test_the_parser_rejects_what_systemd_would_not_read():
    for bad in ("Type=notify\n", "[Service\nType=notify\n", "[Service]\nType notify\n",
                "[Service]\n[Service]\n"):
        with pytest.raises(ValueError):
            parse_unit(bad)


def test_units_use_only_known_sections_and_keys(units):
    for name, text in units.items():
        for section, keys in parse_unit(text).items():
            assert section in KNOWN_KEYS, f"{name}: unknown section [{section}]"
            unknown = set(keys) - KNOWN_KEYS[section]
            assert not unknown, f"{name} [{section}]: unknown keys {sorted(unknown)}"


def test_service_is_notify_reloads_with_hup_and_waits_for_a_graceful_stop(units):
    service = parse_unit(units["mysite.service"])["Service"]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["all"]  # the new master after USR2 sends MAINPID=
    assert re.fullmatch(r"(/bin/|/usr/bin/)?kill -HUP \$MAINPID", service["ExecReload"][0])
    assert service["ExecStart"][0].endswith("manage.py runprefork")
    assert service["KillMode"] == ["mixed"] and service["KillSignal"] == ["SIGTERM"]
    graceful_timeout = 30  # the default, which the page's text names
    assert int(service["TimeoutStopSec"][0]) > graceful_timeout
    assert "User" in service and service["User"] != ["root"]
    # RuntimeDirectory= would remove the socket unit's directory when the service stops
    assert "RuntimeDirectory" not in service


def test_socket_unit_activates_the_service(units):
    socket_unit = parse_unit(units["mysite.socket"])
    service = parse_unit(units["mysite.service"])
    listen = socket_unit["Socket"]["ListenStream"]
    assert listen and all(v.startswith("/") or re.fullmatch(r"[\d.]+:\d+", v) for v in listen)
    assert socket_unit["Socket"]["SocketMode"] == ["0660"]
    assert socket_unit["Install"]["WantedBy"] == ["sockets.target"]
    # mysite.socket starts mysite.service (same name), which needs and follows it
    assert "mysite.socket" in service["Unit"]["Requires"][0].split()
    assert "mysite.socket" in service["Unit"]["After"][0].split()


def test_systemd_analyze_verify(units, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    for name, text in units.items():
        # verify checks that ExecStart exists: the page's virtualenv is replaced by ours,
        # the only change made to the text.
        (tmp_path / name).write_text(text.replace(VENV_PYTHON, sys.executable))
    result = subprocess.run(
        [analyze, "verify", *(str(tmp_path / name) for name in sorted(units))],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    # verify reports unknown keys and bad values as "ignoring" with status 0: any output
    # is a failure.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), \
        result.stdout + result.stderr
