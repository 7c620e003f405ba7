"""The installed `rotator` command against OpenBao and the LeanIX stand-in: one-shot verbs."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from rotator.dev.devvault import free_port
from tests.e2e.conftest import Rig, remaining_seconds


def _assert_no_leak(rig: Rig, *texts: str) -> None:
    for secret in rig.secrets():
        for text in texts:
            assert secret not in text, "a token value reached command output"


def test_check_writes_every_output_and_exits_1_naming_the_rejected_token(rig: Rig) -> None:
    rig.add_token("acme/prod")
    rig.add_token("acme/sandbox")
    rig.add_token("legacy", revoked=True)

    result = rig.rotator("check")

    assert result.returncode == 1
    rejected = [line for line in result.stdout.splitlines() if line.startswith("legacy")]
    assert rejected and "failing" in rejected[0] and "invalid or revoked" in rejected[0]
    for name in ("acme/prod", "acme/sandbox"):
        fields = rig.output(name)
        assert fields is not None
        assert fields["token_type"] == "bearer"
        assert fields["expires_in"] == 3599
        assert fields["source_version"] == 1
        assert fields["issued_at"].endswith("Z") and fields["expires_at"].endswith("Z")
        assert 3500 < remaining_seconds(fields) <= 3599
        assert fields["access_token"].count(".") == 2
    assert rig.output("legacy") is None
    _assert_no_leak(rig, result.stdout, result.stderr)


def test_check_when_everything_works_exits_0(rig: Rig) -> None:
    rig.add_token("acme/prod")

    result = rig.rotator("check")

    assert result.returncode == 0, result.stderr
    assert rig.issued("acme/prod") == 1


def test_a_second_check_issues_nothing(rig: Rig) -> None:
    rig.add_token("acme/prod")
    rig.add_token("acme/sandbox")
    assert rig.rotator("check").returncode == 0
    first = {name: rig.output(name) for name in ("acme/prod", "acme/sandbox")}
    requests_before = rig.idp.requests_total

    result = rig.rotator("check")

    assert result.returncode == 0
    assert rig.idp.requests_total == requests_before
    assert {name: rig.output(name) for name in first} == first


def test_rotate_all_reissues_every_token(rig: Rig) -> None:
    rig.add_token("acme/prod")
    rig.add_token("acme/sandbox")
    assert rig.rotator("check").returncode == 0
    before = {name: rig.output(name) for name in ("acme/prod", "acme/sandbox")}

    result = rig.rotator("rotate", "--all")

    assert result.returncode == 0, result.stderr
    for name, old in before.items():
        assert rig.issued(name) == 2
        new = rig.output(name)
        assert new is not None and old is not None
        assert new["access_token"] != old["access_token"]
    _assert_no_leak(rig, result.stdout, result.stderr)


def test_rotate_by_name_reissues_only_that_token(rig: Rig) -> None:
    rig.add_token("acme/prod")
    rig.add_token("acme/sandbox")
    assert rig.rotator("check").returncode == 0

    result = rig.rotator("rotate", "acme/sandbox")

    assert result.returncode == 0, result.stderr
    assert rig.issued("acme/prod") == 1
    assert rig.issued("acme/sandbox") == 2


def test_rotate_of_an_unknown_name_exits_1(rig: Rig) -> None:
    result = rig.rotator("rotate", "no/such/token")

    assert result.returncode == 1
    assert "no/such/token" in result.stdout


def test_rotate_of_a_name_with_dot_segments_is_a_usage_error(rig: Rig) -> None:
    rig.add_token("other")

    result = rig.rotator("rotate", "acme/../other")

    assert result.returncode == 2
    assert "'acme/../other' is not a token name" in result.stderr
    assert rig.output("other") is None


def test_rotate_reports_the_issuances_the_rotation_counted_as_status_reads_them(
    rig: Rig,
) -> None:
    rig.add_token("acme/prod")
    rig.rotator("rotate", "acme/prod")

    rotated = json.loads(rig.rotator("rotate", "--json", "acme/prod").stdout)
    status = json.loads(rig.rotator("status", "--json").stdout)

    assert rotated["tokens"][0]["issuances_last_hour"] == 2
    assert status["tokens"][0]["issuances_last_hour"] == 2


def test_status_json_reports_every_token_and_issues_nothing(rig: Rig) -> None:
    rig.add_token("acme/prod")
    rig.add_token("legacy", revoked=True)
    rig.rotator("check")
    requests_before = rig.idp.requests_total

    result = rig.rotator("status", "--json")

    assert result.returncode == 1  # legacy has no valid access token
    assert rig.idp.requests_total == requests_before
    report = json.loads(result.stdout)
    assert report["healthy"] is False
    rows = {row["name"]: row for row in report["tokens"]}
    assert set(rows) == {"acme/prod", "legacy"}
    assert rows["acme/prod"]["state"] == "fresh"
    assert rows["acme/prod"]["healthy"] is True
    assert rows["acme/prod"]["issuances_last_hour"] == 1
    assert 3500 < rows["acme/prod"]["expires_in_seconds"] <= 3599
    assert rows["legacy"]["healthy"] is False
    assert rows["legacy"]["expires_at"] is None
    _assert_no_leak(rig, result.stdout, result.stderr)


def test_a_malformed_source_is_reported_without_stopping_the_others(rig: Rig) -> None:
    rig.add_token("acme/prod")
    rig.space.write_source("broken", {"api_token": 12345, "host": "acme.leanix.net.evil.com"})

    result = rig.rotator("check")

    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if line.startswith("broken"))
    assert "invalid_source" in line and "api_token" in line
    assert rig.output("acme/prod") is not None


def test_validate_config_accepts_a_good_file(rig: Rig) -> None:
    result = rig.rotator("validate-config")

    assert result.returncode == 0
    assert "OK" in result.stdout


def test_validate_config_names_an_unknown_key_and_exits_2(rig: Rig) -> None:
    rig.write_config(exchange={"timeout_secs": 5})

    result = rig.rotator("validate-config")

    assert result.returncode == 2
    assert "exchange.timeout_secs" in result.stderr


def test_validate_config_names_a_malformed_webhook_url_without_printing_it(rig: Rig) -> None:
    secret_path = "services/T0000/B0000/" + secrets.token_hex(12)
    rig.write_config(alerts={"webhook_urls": [f"hooks.example.com/{secret_path}"]})

    result = rig.rotator("validate-config")

    assert result.returncode == 2
    assert "alerts.webhook_urls[0]" in result.stderr
    assert secret_path not in result.stderr + result.stdout


def test_validate_config_reads_webhook_urls_from_a_credentials_file(
    rig: Rig, tmp_path: Path
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "webhooks").write_text("https://hooks.example.com/services/x\nnot a url\n")
    rig.write_config(alerts={"webhook_urls_file": "webhooks"})

    result = rig.rotator("validate-config", env={"CREDENTIALS_DIRECTORY": str(credentials)})

    assert result.returncode == 2
    assert "alerts.webhook_urls_file: line 2" in result.stderr
    assert "not a url" not in result.stderr


def test_a_plain_http_vault_off_this_host_exits_2(rig: Rig) -> None:
    result = rig.rotator("validate-config", env={"VAULT_ADDR": "http://vault.example.com:8200"})

    assert result.returncode == 0  # the file's vault.addr wins over VAULT_ADDR
    rig.write_config(vault={"addr": "http://vault.example.com:8200"})

    result = rig.rotator("check")

    assert result.returncode == 2
    assert "vault.addr: plain http" in result.stderr


def test_a_config_file_that_does_not_exist_exits_2(rig: Rig) -> None:
    rig.config_path.unlink()

    assert rig.rotator("check").returncode == 2


def test_vault_refusing_the_token_exits_3(rig: Rig) -> None:
    result = rig.rotator("check", env={"VAULT_TOKEN": "not-a-real-token"})

    assert result.returncode == 3
    assert "refused" in result.stderr
    assert "not-a-real-token" not in result.stderr + result.stdout


def test_vault_unreachable_exits_3(rig: Rig) -> None:
    rig.write_config(vault={"addr": f"http://127.0.0.1:{free_port()}"})

    result = rig.rotator("status")

    assert result.returncode == 3
    assert "Vault" in result.stderr
