"""``trackflow privacy``: bad input ends with one line on stderr and exit 2, before any
broker is asked (the broker here does not exist)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import cli

NO_BROKER = "kafka://127.0.0.1:9"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give exactly one of --user-id, --anonymous-id, --phone, --email"),
        (["--user-id", "a", "--anonymous-id", "b"], "give exactly one of"),
        (["--phone", "not a phone"], "--phone: identities.phone is not a phone number"),
        (["--email", "nobody-at-example"], "--email: identities.email is not an e-mail"),
        (["--user-id", "  "], "--user-id is empty"),
        (["--user-id", "a", "--format", "xml"], "--format must be table or json"),
    ],
)
def test_bad_input_is_refused_with_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    runner = CliRunner()
    env = {"TRACKFLOW_BROKER": NO_BROKER, "TRACKFLOW_DATA_DIR": str(tmp_path), "TRACKFLOW_DEV": "1"}
    result = runner.invoke(cli, ["privacy", "delete", *args], env=env)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "lake").exists()


def test_without_a_pii_key_nothing_is_hashed_with_a_public_one(tmp_path: Path) -> None:
    env = {"TRACKFLOW_BROKER": NO_BROKER, "TRACKFLOW_DATA_DIR": str(tmp_path), "TRACKFLOW_DEV": "0",
           "TRACKFLOW_PII_SECRET": ""}  # fmt: skip
    result = CliRunner().invoke(cli, ["privacy", "suppress", "--phone", "13800138000"], env=env)
    assert result.exit_code == 2
    assert "TRACKFLOW_PII_SECRET is not set" in result.output


@pytest.mark.parametrize("command", ["suppress", "delete", "unsuppress", "status"])
def test_every_command_takes_the_dev_flag_its_key_error_names(command: str) -> None:
    result = CliRunner().invoke(cli, ["privacy", command, "--help"])
    assert "--dev" in result.output


def test_with_dev_and_no_pii_key_a_command_goes_on_to_the_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The missing-key message says "pass --dev"; with it the run gets as far as the broker
    (which does not exist here: exit 1, not 2)."""
    from pipeline.runtime import kafka_admin

    ensure = kafka_admin.ensure_topic  # its 15 s wait for the missing broker, cut to 1 s
    monkeypatch.setattr(
        kafka_admin, "ensure_topic", lambda *a, **kw: ensure(*a, **{**kw, "timeout": 1.0})
    )
    env = {"TRACKFLOW_BROKER": NO_BROKER, "TRACKFLOW_DATA_DIR": str(tmp_path), "TRACKFLOW_DEV": "0",
           "TRACKFLOW_PII_SECRET": ""}  # fmt: skip
    args = ["privacy", "suppress", "--phone", "13800138000"]
    without = CliRunner().invoke(cli, args, env=env)
    assert without.exit_code == 2
    assert "pass --dev" in without.output
    with_dev = CliRunner().invoke(cli, [*args, "--dev"], env=env)
    assert "TRACKFLOW_PII_SECRET is not set" not in with_dev.output
    assert with_dev.exit_code == 1, with_dev.output
