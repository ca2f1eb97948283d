"""``resguard guardian --install``: a systemd user unit that systemd-analyze accepts, a
launchd plist that plistlib reads, the current interpreter's resguard by its absolute
path, no overwrite without --force, a hint printed and nothing enabled."""

from __future__ import annotations

import io
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from resguard.cli import main
from resguard.guardian import guardian_command, systemd_unit, unit_path


def install(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["guardian", "--install", *args], out=out)
    return code, out.getvalue()


def test_the_unit_goes_under_xdg_config_home_and_the_hint_says_how_to_enable_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    code, text = install("--platform", "linux")
    path = tmp_path / "xdg" / "systemd" / "user" / "resguard-guardian.service"
    assert code == 0
    assert path.is_file()
    assert f"wrote {path}" in text
    assert (
        "systemctl --user daemon-reload && systemctl --user enable --now resguard-guardian" in text
    )
    assert "nothing was enabled or started" in text
    unit = path.read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    program = exec_start.removeprefix("ExecStart=").split()[0]
    assert Path(program).is_absolute()
    assert Path(program).parent == Path(sys.executable).absolute().parent
    assert exec_start.endswith(" guardian")


def test_an_existing_unit_is_not_overwritten_without_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "unit.service"
    target.write_text("mine\n")
    code, _ = install("--platform", "linux", "--output", str(target))
    assert code == 2
    assert target.read_text() == "mine\n"
    assert "exists; pass --force" in capsys.readouterr().err
    code, _ = install("--platform", "linux", "--output", str(target), "--force")
    assert code == 0
    assert target.read_text().startswith("[Unit]")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    config = tmp_path / "my config %h.toml"  # a space and a specifier, quoted and escaped
    config.write_text("[guardian]\n")
    target = tmp_path / "resguard-guardian.service"
    code, _ = install("--platform", "linux", "--output", str(target), "--config", str(config))
    assert code == 0
    result = subprocess.run(
        ["systemd-analyze", "verify", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = [line for line in result.stderr.splitlines() if target.name in line]
    assert result.returncode == 0, result.stderr
    assert problems == []
    assert f'"{str(config).replace("%", "%%")}"' in target.read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_would_catch_a_broken_unit(tmp_path: Path) -> None:
    target = tmp_path / "resguard-guardian.service"
    target.write_text(systemd_unit(["/nonexistent/resguard", "guardian"]))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0  # the check above is one that can fail


def test_the_launchd_agent_is_a_plist_running_the_guardian_at_login(tmp_path: Path) -> None:
    target = tmp_path / "io.resguard.guardian.plist"
    code, text = install("--platform", "macos", "--output", str(target))
    assert code == 0
    agent = plistlib.loads(target.read_bytes())
    assert agent["Label"] == "io.resguard.guardian"
    assert agent["ProgramArguments"] == guardian_command()
    assert agent["ProgramArguments"][-1] == "guardian"
    assert agent["RunAtLoad"] is True
    assert "launchctl bootstrap gui/$(id -u)" in text  # not the deprecated load -w
    assert "Library/LaunchAgents/io.resguard.guardian.plist" in text


def test_the_default_places_are_the_users_own() -> None:
    home = {"HOME": "/home/dev"}
    assert unit_path("macos", home) == Path(
        "/home/dev/Library/LaunchAgents/io.resguard.guardian.plist"
    )
    assert unit_path("linux", home) == Path(
        "/home/dev/.config/systemd/user/resguard-guardian.service"
    )
    assert unit_path("linux", {**home, "XDG_CONFIG_HOME": "/x"}) == Path(
        "/x/systemd/user/resguard-guardian.service"
    )


def test_install_options_without_install_are_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["guardian", "--force"], out=io.StringIO()) == 2
    assert "--force goes with --install" in capsys.readouterr().err
    assert main(["guardian", "--json"], out=io.StringIO()) == 2
    assert "--json goes with --once" in capsys.readouterr().err
