"""`iscsi-audit simulator`: options, what it prints on start, where credentials come from."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from collector.simulator import command
from collector.simulator.server import SimulatorServer


@pytest.fixture(autouse=True)
def no_serving(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Bind the sockets for real but return instead of serving for ever."""
    monkeypatch.setattr(SimulatorServer, "run", lambda self: self.stop())
    monkeypatch.setattr(command, "tls_directory", lambda: tmp_path / "tls")


def test_every_option_has_help_text() -> None:
    assert command.simulator_command.name == "simulator"
    for param in command.simulator_command.params:
        assert isinstance(param, click.Option) and param.help, param.name


def test_start_prints_each_cluster_url_and_the_credentials_source() -> None:
    result = CliRunner().invoke(
        command.simulator_command, ["--port", "0", "--clusters", "3", "--sessions", "20"]
    )
    assert result.exit_code == 0, result.output
    urls = [line for line in result.output.splitlines() if "http://127.0.0.1:" in line]
    assert len(urls) == 3
    assert "sim-cluster-003" in result.output
    assert "built-in demo default" in result.output


def test_password_from_the_environment_is_named_not_printed() -> None:
    result = CliRunner().invoke(
        command.simulator_command,
        ["--port", "0", "--sessions", "5"],
        env={command.PASSWORD_ENV: "s3cret-from-env"},
    )
    assert result.exit_code == 0, result.output
    assert f"password from ${command.PASSWORD_ENV}" in result.output
    assert "s3cret-from-env" not in result.output


def test_tls_writes_the_ca_and_serves_https(tmp_path: Path) -> None:
    result = CliRunner().invoke(command.simulator_command, ["--port", "0", "--tls"])
    assert result.exit_code == 0, result.output
    ca_line = next(line for line in result.output.splitlines() if "CA certificate" in line)
    ca_path = Path(ca_line.split(": ", 1)[1])
    assert ca_path.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert "https://127.0.0.1:" in result.output


def test_ports_past_65535_are_refused() -> None:
    result = CliRunner().invoke(command.simulator_command, ["--port", "65535", "--clusters", "2"])
    assert result.exit_code == 2
    assert "65535" in result.output
