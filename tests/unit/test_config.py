"""The TOML configuration: rotator.config.parse / load, with the environment passed in."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotator import config
from rotator.config import ApiTokensConfig, Config
from rotator.errors import ConfigError

SPEC_EXAMPLE = """\
[vault]
addr = "https://vault.example.com:8200"
mount = "secret"
source_prefix = "leanix/api-tokens"
output_prefix = "leanix/access-tokens"
# ca_cert = "/etc/ssl/vault-ca.pem"   namespace = "ops"

[vault.auth]
method = "approle"            # "token" | "approle"
# token: VAULT_TOKEN, or token_file = "/run/vault-agent/token"
role_id_file = "/etc/rotator/role-id"      # or role_id = "..."
secret_id_file = "/run/credentials/rotator.service/secret-id"

[exchange]
allowed_hosts = ["*.leanix.net"]   # host patterns a token may ever be sent to
insecure_http_hosts = []           # hosts where plain http is tolerated (local trials only)
timeout_seconds = 10
refresh_fraction = 0.8             # refresh once this share of the token's lifetime has passed
max_workers = 8                    # exchanges in flight at once, at most
max_backoff_seconds = 300          # retry backoff cap for a failing token

[schedule]
check_interval_seconds = 60        # how often Vault state is verified
discovery_interval_seconds = 300   # how often the source prefix is re-listed

[alerts]
sentry_dsn = ""                    # or SENTRY_DSN
webhook_urls = []                  # JSON POST per alert event
alertmanager_url = ""              # Prometheus Alertmanager base URL (API v2)
max_issuances_per_hour = 6         # per token; a hard cap, and the 'suspicious' threshold
repeat_interval_seconds = 3600     # re-notify a still-firing alert this often

[metrics]
listen = "127.0.0.1:9464"          # "" disables; serves /metrics and /healthz
"""

ADDR = "https://vault.example.com:8200"
TOKEN_ENV = {"VAULT_TOKEN": "hvs.test"}


def minimal(**sections: dict[str, Any]) -> dict[str, Any]:
    """A smallest valid document (token auth via VAULT_TOKEN), with `sections` merged in."""
    raw: dict[str, Any] = {"vault": {"addr": ADDR}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


def parse(raw: dict[str, Any], environ: dict[str, str] | None = None) -> Config:
    return config.parse(raw, TOKEN_ENV if environ is None else environ)


def with_key(dotted_section: str, key: str, value: Any) -> dict[str, Any]:
    raw = minimal()
    table = raw
    for part in dotted_section.split("."):
        table = table.setdefault(part, {})
    table[key] = value
    return raw


# --- the SPEC example and defaults ---


def test_spec_example_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "rotator.toml"
    path.write_text(SPEC_EXAMPLE)
    loaded = config.load(path, {})
    assert loaded.path == path
    assert loaded.vault.addr == ADDR
    assert (loaded.vault.mount, loaded.vault.source_prefix, loaded.vault.output_prefix) == (
        "secret",
        "leanix/api-tokens",
        "leanix/access-tokens",
    )
    assert loaded.vault.auth.method == "approle"
    assert loaded.vault.auth.role_id_file == Path("/etc/rotator/role-id")
    assert loaded.vault.auth.secret_id_file == Path("/run/credentials/rotator.service/secret-id")
    assert loaded.exchange.allowed_hosts == ("*.leanix.net",)
    assert loaded.exchange.insecure_http_hosts == ()
    assert loaded.exchange.timeout_seconds == 10.0
    assert loaded.exchange.refresh_fraction == 0.8
    assert loaded.exchange.max_workers == 8
    assert loaded.exchange.max_backoff_seconds == 300.0
    assert loaded.schedule.check_interval_seconds == 60.0
    assert loaded.schedule.discovery_interval_seconds == 300.0
    assert loaded.alerts.webhook_urls == ()
    assert loaded.alerts.max_issuances_per_hour == 6
    assert loaded.alerts.repeat_interval_seconds == 3600.0
    assert loaded.metrics.listen == "127.0.0.1:9464"


def test_defaults_match_the_spec_example() -> None:
    loaded = parse(minimal())
    assert loaded.vault.mount == "secret"
    assert loaded.vault.source_prefix == "leanix/api-tokens"
    assert loaded.vault.output_prefix == "leanix/access-tokens"
    assert loaded.vault.ca_cert is None
    assert loaded.vault.namespace is None
    assert loaded.vault.auth.method == "token"
    assert loaded.exchange == config.ExchangeConfig(
        allowed_hosts=("*.leanix.net",),
        insecure_http_hosts=(),
        timeout_seconds=10.0,
        refresh_fraction=0.8,
        max_workers=8,
        max_backoff_seconds=300.0,
    )
    assert loaded.schedule == config.ScheduleConfig(60.0, 300.0)
    assert loaded.alerts == config.AlertsConfig("", (), "", 6, 3600.0)
    assert loaded.metrics.listen == "127.0.0.1:9464"
    assert loaded.path is None


def test_numbers_given_as_integers_become_floats() -> None:
    loaded = parse(minimal(exchange={"timeout_seconds": 5}))
    assert isinstance(loaded.exchange.timeout_seconds, float)


def test_prefixes_lose_surrounding_slashes() -> None:
    loaded = parse(minimal(vault={"source_prefix": "/a/src/", "output_prefix": "a/out/"}))
    assert (loaded.vault.source_prefix, loaded.vault.output_prefix) == ("a/src", "a/out")


def test_host_patterns_are_lowercased() -> None:
    loaded = parse(minimal(exchange={"allowed_hosts": ["*.LeanIX.net"]}))
    assert loaded.exchange.allowed_hosts == ("*.leanix.net",)


def test_empty_listen_disables_metrics() -> None:
    assert parse(minimal(metrics={"listen": ""})).metrics.listen == ""


# --- unknown keys ---


@pytest.mark.parametrize(
    "section", ["vault", "vault.auth", "exchange", "schedule", "alerts", "metrics", "api_tokens"]
)
def test_unknown_key_in_any_section_names_section_and_key(section: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{section}\.colour: unknown key"):
        parse(with_key(section, "colour", "blue"))


def test_unknown_section_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^logging: unknown section"):
        parse(minimal(logging={"level": "debug"}))


def test_vault_token_in_the_file_is_an_unknown_key() -> None:
    with pytest.raises(ConfigError, match=r"^vault\.auth\.token: unknown key"):
        parse(with_key("vault.auth", "token", "hvs.secret"))


def test_section_that_is_not_a_table_is_named() -> None:
    raw = minimal()
    raw["exchange"] = "fast"
    with pytest.raises(ConfigError, match=r"^exchange: expected a table, got a string"):
        parse(raw)


def test_vault_auth_that_is_not_a_table_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^vault\.auth: expected a table"):
        parse(with_key("vault", "auth", "approle"))


# --- wrong types ---


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("vault", "addr", 8200, "vault.addr: expected a string, got int"),
        ("vault", "mount", ["secret"], "vault.mount: expected a string, got a list"),
        ("vault", "ca_cert", True, "vault.ca_cert: expected a string, got a boolean"),
        ("vault", "namespace", {"a": 1}, "vault.namespace: expected a string, got a table"),
        ("vault.auth", "method", 1, "vault.auth.method: expected a string"),
        ("vault.auth", "token_file", 1.5, "vault.auth.token_file: expected a string"),
        ("exchange", "timeout_seconds", "10", "exchange.timeout_seconds: expected a number"),
        ("exchange", "refresh_fraction", "0.8", "exchange.refresh_fraction: expected a number"),
        ("exchange", "max_workers", 8.0, "exchange.max_workers: expected an integer"),
        ("exchange", "max_backoff_seconds", [300], "exchange.max_backoff_seconds: expected a"),
        ("exchange", "allowed_hosts", "*.leanix.net", "exchange.allowed_hosts: expected a list"),
        ("exchange", "allowed_hosts", [1], r"exchange.allowed_hosts\[0\]: expected a string"),
        ("exchange", "insecure_http_hosts", "x", "exchange.insecure_http_hosts: expected a list"),
        ("schedule", "check_interval_seconds", "60", "schedule.check_interval_seconds: expected"),
        ("schedule", "discovery_interval_seconds", None, "schedule.discovery_interval_seconds"),
        ("alerts", "sentry_dsn", 1, "alerts.sentry_dsn: expected a string"),
        ("alerts", "webhook_urls", "https://x", "alerts.webhook_urls: expected a list"),
        ("alerts", "webhook_urls", [1], r"alerts.webhook_urls\[0\]: expected a string"),
        ("alerts", "alertmanager_url", 1, "alerts.alertmanager_url: expected a string"),
        ("alerts", "max_issuances_per_hour", 6.5, "alerts.max_issuances_per_hour: expected an"),
        ("alerts", "repeat_interval_seconds", "1h", "alerts.repeat_interval_seconds: expected"),
        ("metrics", "listen", 9464, "metrics.listen: expected a string"),
    ],
)
def test_wrong_type_names_the_key(section: str, key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{message}"):
        parse(with_key(section, key, value))


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("exchange", "timeout_seconds"),
        ("exchange", "refresh_fraction"),
        ("exchange", "max_backoff_seconds"),
        ("schedule", "check_interval_seconds"),
        ("alerts", "repeat_interval_seconds"),
    ],
)
def test_boolean_is_not_a_number(section: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{section}\.{key}: expected a number, got a boolean"):
        parse(with_key(section, key, True))


@pytest.mark.parametrize(
    ("section", "key"), [("exchange", "max_workers"), ("alerts", "max_issuances_per_hour")]
)
def test_boolean_is_not_an_integer(section: str, key: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"^{section}\.{key}: expected an integer, got a boolean"
    ):
        parse(with_key(section, key, True))


# --- out-of-range and malformed values ---


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("exchange", "timeout_seconds", 0),
        ("exchange", "timeout_seconds", -1),
        ("exchange", "timeout_seconds", math.inf),
        ("exchange", "timeout_seconds", math.nan),
        ("exchange", "refresh_fraction", 0.05),
        ("exchange", "refresh_fraction", 0.99),
        ("exchange", "refresh_fraction", 1.0),
        ("exchange", "refresh_fraction", 0),
        ("exchange", "max_workers", 0),
        ("exchange", "max_workers", 100_000),
        ("exchange", "max_backoff_seconds", 0.5),
        ("schedule", "check_interval_seconds", 0),
        ("schedule", "discovery_interval_seconds", 10**400),
        ("alerts", "max_issuances_per_hour", 0),
        ("alerts", "repeat_interval_seconds", 0),
    ],
)
def test_out_of_range_number_names_the_key(section: str, key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=rf"^{section}\.{key}: "):
        parse(with_key(section, key, value))


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("vault", "addr", "vault.example.com:8200"),
        ("vault", "addr", "ftp://vault.example.com"),
        ("vault", "addr", ""),
        ("vault", "mount", ""),
        ("vault", "mount", "   "),
        ("vault", "source_prefix", "a//b"),
        ("vault", "source_prefix", "a/../b"),
        ("vault", "output_prefix", "/"),
        ("vault", "namespace", ""),
        ("vault.auth", "method", "userpass"),
        ("exchange", "allowed_hosts", ["*"]),
        ("exchange", "allowed_hosts", ["*.*"]),
        ("exchange", "allowed_hosts", ["acme.leanix.net:443"]),
        ("exchange", "allowed_hosts", ["https://acme.leanix.net"]),
        ("exchange", "allowed_hosts", ["user@acme.leanix.net"]),
        ("exchange", "allowed_hosts", [""]),
        ("alerts", "webhook_urls", ["not a url"]),
        ("alerts", "webhook_urls", [""]),
        ("alerts", "alertmanager_url", "alertmanager:9093"),
        ("metrics", "listen", "127.0.0.1"),
        ("metrics", "listen", "127.0.0.1:0"),
        ("metrics", "listen", "127.0.0.1:70000"),
        ("metrics", "listen", "127.0.0.1:http"),
    ],
)
def test_malformed_value_names_the_key(section: str, key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=rf"^{section}\.{key}"):
        parse(with_key(section, key, value))


def test_listen_port_with_a_non_ascii_digit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^metrics\.listen: "):
        parse(minimal(metrics={"listen": "127.0.0.1:9\u00b2"}))


def test_vault_addr_with_an_unclosed_ipv6_bracket_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^vault\.addr: "):
        parse(minimal(vault={"addr": "https://[::1:8200"}))


def test_vault_addr_with_a_bad_port_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^vault\.addr: "):
        parse(minimal(vault={"addr": "https://vault.example.com:99999"}))


def test_error_quotes_the_bad_value() -> None:
    with pytest.raises(ConfigError, match=r"exchange\.max_workers: 0 is out of range"):
        parse(minimal(exchange={"max_workers": 0}))


# --- environment ---


def test_vault_addr_comes_from_the_environment_when_the_file_has_none() -> None:
    loaded = parse({}, {"VAULT_ADDR": "https://env-vault:8200", "VAULT_TOKEN": "t"})
    assert loaded.vault.addr == "https://env-vault:8200"


def test_vault_addr_in_the_file_wins_over_the_environment() -> None:
    loaded = parse(minimal(), {"VAULT_ADDR": "https://env-vault:8200", "VAULT_TOKEN": "t"})
    assert loaded.vault.addr == ADDR


def test_bad_vault_addr_in_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^VAULT_ADDR: "):
        parse({}, {"VAULT_ADDR": "vault:8200", "VAULT_TOKEN": "t"})


def test_vault_token_comes_from_the_environment() -> None:
    loaded = parse(minimal(), {"VAULT_TOKEN": "hvs.from-env"})
    assert loaded.vault.auth.env_token == "hvs.from-env"


def test_vault_cacert_comes_from_the_environment() -> None:
    loaded = parse(minimal(), {**TOKEN_ENV, "VAULT_CACERT": "/etc/ssl/env-ca.pem"})
    assert loaded.vault.ca_cert == Path("/etc/ssl/env-ca.pem")


def test_ca_cert_in_the_file_wins_over_vault_cacert() -> None:
    raw = minimal(vault={"ca_cert": "/etc/ssl/file-ca.pem"})
    loaded = parse(raw, {**TOKEN_ENV, "VAULT_CACERT": "/etc/ssl/env-ca.pem"})
    assert loaded.vault.ca_cert == Path("/etc/ssl/file-ca.pem")


def test_vault_namespace_comes_from_the_environment() -> None:
    loaded = parse(minimal(), {**TOKEN_ENV, "VAULT_NAMESPACE": "ops"})
    assert loaded.vault.namespace == "ops"


def test_namespace_in_the_file_wins_over_vault_namespace() -> None:
    loaded = parse(minimal(vault={"namespace": "file"}), {**TOKEN_ENV, "VAULT_NAMESPACE": "env"})
    assert loaded.vault.namespace == "file"


def test_sentry_dsn_comes_from_the_environment() -> None:
    loaded = parse(minimal(), {**TOKEN_ENV, "SENTRY_DSN": "https://key@sentry.example/1"})
    assert loaded.alerts.sentry_dsn == "https://key@sentry.example/1"


def test_sentry_dsn_in_the_file_wins_even_when_empty() -> None:
    raw = minimal(alerts={"sentry_dsn": ""})
    loaded = parse(raw, {**TOKEN_ENV, "SENTRY_DSN": "https://key@sentry.example/1"})
    assert loaded.alerts.sentry_dsn == ""


def test_empty_environment_variables_are_ignored() -> None:
    environ = {**TOKEN_ENV, "VAULT_CACERT": "", "VAULT_NAMESPACE": "", "SENTRY_DSN": ""}
    loaded = parse(minimal(), environ)
    assert (loaded.vault.ca_cert, loaded.vault.namespace, loaded.alerts.sentry_dsn) == (
        None,
        None,
        "",
    )


def test_missing_vault_addr_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^vault\.addr: required"):
        parse({}, TOKEN_ENV)


def test_empty_vault_addr_variable_counts_as_missing() -> None:
    with pytest.raises(ConfigError, match=r"^vault\.addr: required"):
        parse({}, {**TOKEN_ENV, "VAULT_ADDR": ""})


# --- vault.auth ---


def approle(**auth: str) -> dict[str, Any]:
    return minimal(vault={"auth": {"method": "approle", **auth}})


def test_approle_with_role_id_file_and_secret_id_file() -> None:
    loaded = parse(approle(role_id_file="/r", secret_id_file="/s"), {})
    assert loaded.vault.auth == config.VaultAuthConfig(
        method="approle", role_id_file=Path("/r"), secret_id_file=Path("/s")
    )


def test_approle_with_inline_role_id() -> None:
    loaded = parse(approle(role_id="role-1", secret_id_file="/s"), {})
    assert loaded.vault.auth.role_id == "role-1"


def test_approle_ignores_vault_token_in_the_environment() -> None:
    loaded = parse(approle(role_id="role-1", secret_id_file="/s"), TOKEN_ENV)
    assert loaded.vault.auth.env_token is None


def test_approle_with_both_role_id_and_role_id_file_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^vault\.auth\.role_id: give exactly one"):
        parse(approle(role_id="r", role_id_file="/r", secret_id_file="/s"), {})


def test_approle_without_any_role_id_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^vault\.auth\.role_id: give exactly one"):
        parse(approle(secret_id_file="/s"), {})


def test_approle_without_secret_id_file_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^vault\.auth\.secret_id_file: required"):
        parse(approle(role_id_file="/r"), {})


def test_approle_with_token_file_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^vault\.auth\.token_file: not used"):
        parse(approle(role_id_file="/r", secret_id_file="/s", token_file="/t"), {})


def test_token_method_needs_vault_token_or_token_file() -> None:
    with pytest.raises(ConfigError, match=r"^vault\.auth\.token_file: required"):
        parse(minimal(), {})


def test_token_method_accepts_a_token_file_without_vault_token() -> None:
    loaded = parse(minimal(vault={"auth": {"token_file": "/run/vault-agent/token"}}), {})
    assert loaded.vault.auth.token_file == Path("/run/vault-agent/token")
    assert loaded.vault.auth.env_token is None


def test_token_method_refuses_approle_keys() -> None:
    with pytest.raises(ConfigError, match=r"^vault\.auth\.role_id_file: not used"):
        parse(minimal(vault={"auth": {"method": "token", "role_id_file": "/r"}}))


# --- prefixes ---


def test_output_prefix_equal_to_source_prefix_is_refused() -> None:
    raw = minimal(vault={"source_prefix": "leanix/tokens", "output_prefix": "/leanix/tokens/"})
    with pytest.raises(ConfigError, match=r"^vault\.output_prefix: must differ"):
        parse(raw)


def test_output_prefix_inside_source_prefix_is_refused() -> None:
    raw = minimal(vault={"source_prefix": "leanix", "output_prefix": "leanix/out"})
    with pytest.raises(ConfigError, match=r"^vault\.output_prefix: must not be inside"):
        parse(raw)


def test_source_prefix_inside_output_prefix_is_refused() -> None:
    raw = minimal(vault={"source_prefix": "leanix/out/src", "output_prefix": "leanix/out"})
    with pytest.raises(ConfigError, match=r"^vault\.output_prefix: must not be inside"):
        parse(raw)


def test_sibling_prefixes_sharing_a_name_start_are_fine() -> None:
    raw = minimal(vault={"source_prefix": "leanix/api", "output_prefix": "leanix/api-out"})
    assert parse(raw).vault.output_prefix == "leanix/api-out"


# --- load ---


def test_missing_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="does not exist") as excinfo:
        config.load(path, TOKEN_ENV)
    assert str(path) in str(excinfo.value)


def test_invalid_toml_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[vault\naddr = \n")
    with pytest.raises(ConfigError, match="not valid TOML") as excinfo:
        config.load(path, TOKEN_ENV)
    assert str(path) in str(excinfo.value)


def test_directory_instead_of_a_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=str(tmp_path)):
        config.load(tmp_path, TOKEN_ENV)


def test_load_reads_the_environment_it_is_given(tmp_path: Path) -> None:
    path = tmp_path / "rotator.toml"
    path.write_text("[exchange]\nmax_workers = 2\n")
    loaded = config.load(path, {"VAULT_ADDR": "https://env-vault:8200", "VAULT_TOKEN": "t"})
    assert (loaded.vault.addr, loaded.exchange.max_workers) == ("https://env-vault:8200", 2)


# --- frozen ---


def test_config_cannot_be_changed_after_loading() -> None:
    loaded = parse(minimal())
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.exchange.timeout_seconds = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.vault = loaded.vault  # type: ignore[misc]


def test_host_lists_are_immutable_tuples() -> None:
    loaded = parse(minimal(exchange={"allowed_hosts": ["a.example"]}))
    assert isinstance(loaded.exchange.allowed_hosts, tuple)


# --- property: parse only ever raises ConfigError ---

_KEYS = {section: sorted(keys) for section, keys in config._SCHEMA.items()}

toml_scalars = (
    st.text(max_size=30)
    | st.integers()
    | st.floats()
    | st.booleans()
    | st.datetimes(timezones=st.none() | st.just(UTC))
    | st.dates()
    | st.times()
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
plausible = st.sampled_from(
    [
        "https://vault.example.com:8200",
        "http://[::1",
        "https://h:99999",
        "approle",
        "token",
        "/etc/x",
        "a/b",
        "",
        "127.0.0.1:9464",
        "x:\u00b2",
        ["*.leanix.net"],
        ["https://hook.example/x"],
        0.8,
        10,
        1,
    ]
)


def section_values(section: str) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from(_KEYS[section]) | st.text(max_size=8)
    return st.dictionaries(keys, plausible | toml_values, max_size=6)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for section in ("exchange", "schedule", "alerts", "metrics"):
        if draw(st.booleans()):
            raw[section] = draw(section_values(section) | toml_values)
    if draw(st.booleans()):
        vault = draw(section_values("vault"))
        if draw(st.booleans()):
            vault["auth"] = draw(section_values("vault.auth") | toml_values)
        raw["vault"] = vault
    if draw(st.booleans()):
        raw.update(draw(st.dictionaries(st.text(max_size=8), toml_values, max_size=2)))
    return raw


environs = st.dictionaries(
    st.sampled_from(["VAULT_ADDR", "VAULT_TOKEN", "VAULT_CACERT", "VAULT_NAMESPACE", "SENTRY_DSN"]),
    plausible.filter(lambda v: isinstance(v, str)) | st.text(max_size=20),
)


@given(raw=documents(), environ=environs)
def test_parse_returns_a_config_or_raises_config_error(
    raw: dict[str, Any], environ: dict[str, str]
) -> None:
    try:
        result = config.parse(raw, environ)
    except ConfigError:
        return
    assert isinstance(result, Config)


def test_toml_values_include_dates_and_times() -> None:
    # tomllib hands out date/time objects too; they are wrong types, not crashes.
    for value in (date(2026, 1, 1), time(12, 0), datetime(2026, 1, 1, tzinfo=UTC)):
        with pytest.raises(ConfigError, match=r"^exchange\.timeout_seconds: expected a number"):
            parse(minimal(exchange={"timeout_seconds": value}))


# --- [api_tokens] ---


def test_api_tokens_defaults_replace_14_days_before_expiry_and_look_up_daily() -> None:
    loaded = parse(minimal())

    assert loaded.api_tokens == ApiTokensConfig(0.0, 14.0, 86400.0)


def test_api_tokens_are_read() -> None:
    loaded = parse(
        minimal(
            api_tokens={
                "replace_every_days": 90,
                "replace_before_expiry_days": 0,
                "lookup_interval_seconds": 3600,
            }
        )
    )

    assert loaded.api_tokens == ApiTokensConfig(90.0, 0.0, 3600.0)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("replace_every_days", -1),
        ("replace_before_expiry_days", "14"),
        ("lookup_interval_seconds", 0),
    ],
)
def test_bad_api_tokens_values_name_the_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=rf"^api_tokens\.{key}: "):
        parse(minimal(api_tokens={key: value}))


# --- secrets kept out of the config file (alerts.*_file) ---

HOOK = "https://hooks.example.com/services/T0000/B0000/s3cr3tp4th"
DSN = "https://publickey@sentry.example.com/42"


def credentials(tmp_path: Path, name: str, text: str) -> dict[str, str]:
    """A $CREDENTIALS_DIRECTORY holding `name` with `text`, as systemd's LoadCredential= makes."""
    (tmp_path / name).write_text(text)
    return {**TOKEN_ENV, "CREDENTIALS_DIRECTORY": str(tmp_path)}


def test_webhook_urls_come_from_a_file_one_per_line(tmp_path: Path) -> None:
    text = f"# on-call\n{HOOK}\n\n   https://alerts.example.org/hook  \n# end\n"
    environ = credentials(tmp_path, "webhooks", text)

    loaded = parse(minimal(alerts={"webhook_urls_file": "webhooks"}), environ)

    assert loaded.alerts.webhook_urls == (HOOK, "https://alerts.example.org/hook")


def test_an_absolute_webhook_urls_file_needs_no_credentials_directory(tmp_path: Path) -> None:
    path = tmp_path / "hooks"
    path.write_text(HOOK + "\n")

    loaded = parse(minimal(alerts={"webhook_urls_file": str(path)}))

    assert loaded.alerts.webhook_urls == (HOOK,)


def test_the_sentry_dsn_comes_from_a_file(tmp_path: Path) -> None:
    environ = credentials(tmp_path, "sentry-dsn", DSN + "\n")

    loaded = parse(minimal(alerts={"sentry_dsn_file": "sentry-dsn"}), environ)

    assert loaded.alerts.sentry_dsn == DSN


def test_a_sentry_dsn_file_wins_over_sentry_dsn_in_the_environment(tmp_path: Path) -> None:
    environ = credentials(tmp_path, "sentry-dsn", DSN)

    loaded = parse(
        minimal(alerts={"sentry_dsn_file": "sentry-dsn"}),
        {**environ, "SENTRY_DSN": "https://other@sentry.example.com/1"},
    )

    assert loaded.alerts.sentry_dsn == DSN


@pytest.mark.parametrize(
    ("key", "value"), [("webhook_urls", [HOOK]), ("sentry_dsn", DSN)], ids=["webhooks", "dsn"]
)
def test_a_key_and_its_file_together_are_an_error_naming_both(
    tmp_path: Path, key: str, value: Any
) -> None:
    environ = credentials(tmp_path, "f", HOOK)

    with pytest.raises(ConfigError, match=rf"alerts\.{key} .*alerts\.{key}_file"):
        parse(minimal(alerts={key: value, f"{key}_file": "f"}), environ)


def test_a_relative_file_without_a_credentials_directory_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^alerts\.webhook_urls_file: .*CREDENTIALS_DIRECTORY"):
        parse(minimal(alerts={"webhook_urls_file": "webhooks"}))


def test_a_missing_file_is_an_error_naming_the_key(tmp_path: Path) -> None:
    environ = {**TOKEN_ENV, "CREDENTIALS_DIRECTORY": str(tmp_path)}

    with pytest.raises(ConfigError, match=r"^alerts\.sentry_dsn_file: cannot read"):
        parse(minimal(alerts={"sentry_dsn_file": "absent"}), environ)


def test_a_file_that_is_not_a_regular_file_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^alerts\.sentry_dsn_file: "):
        parse(minimal(alerts={"sentry_dsn_file": "/dev/zero"}))


def test_an_empty_sentry_dsn_file_is_an_error(tmp_path: Path) -> None:
    environ = credentials(tmp_path, "sentry-dsn", "\n")

    with pytest.raises(ConfigError, match=r"^alerts\.sentry_dsn_file: .* is empty"):
        parse(minimal(alerts={"sentry_dsn_file": "sentry-dsn"}), environ)


def test_a_malformed_url_in_the_webhook_file_names_its_line_and_not_the_text(
    tmp_path: Path,
) -> None:
    secret_path = "hooks.example.com/services/T0000/B0000/s3cr3tp4th"
    environ = credentials(tmp_path, "webhooks", f"# first\n{HOOK}\n{secret_path}\n")

    with pytest.raises(ConfigError) as caught:
        parse(minimal(alerts={"webhook_urls_file": "webhooks"}), environ)

    assert str(caught.value).startswith("alerts.webhook_urls_file: line 3: ")
    assert "s3cr3tp4th" not in str(caught.value)


# --- config errors never echo what may be a secret ---


@pytest.mark.parametrize(
    ("section", "key", "value", "named"),
    [
        ("alerts", "webhook_urls", [HOOK, "hooks.example.com/services/s3cr3tp4th"], "[1]"),
        ("alerts", "webhook_urls", ["ftp://u:s3cr3tp4th@hooks.example.com/x"], "[0]"),
        ("alerts", "webhook_urls", ["https://hooks.example.com:99999/s3cr3tp4th"], "[0]"),
        ("alerts", "alertmanager_url", "alertmanager:9093/s3cr3tp4th", ""),
        ("alerts", "sentry_dsn", "https//s3cr3tp4th@sentry.example.com/1", ""),
        ("alerts", "sentry_dsn", "https://sentry.example.com/s3cr3tp4th", ""),
        ("vault", "addr", "vault.example.com/s3cr3tp4th", ""),
    ],
)
def test_a_malformed_url_is_named_by_its_key_and_never_echoed(
    section: str, key: str, value: Any, named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(with_key(section, key, value))

    message = str(caught.value)
    assert message.startswith(f"{section}.{key}{named}: ")
    assert "s3cr3tp4th" not in message


def test_a_config_repr_shows_no_alert_secrets() -> None:
    loaded = parse(minimal(alerts={"webhook_urls": [HOOK], "sentry_dsn": DSN}))

    assert "s3cr3tp4th" not in repr(loaded)
    assert "publickey" not in repr(loaded)


# --- plain-http Vault only on loopback ---


@pytest.mark.parametrize(
    "addr",
    [
        "http://127.0.0.1:8200",
        "http://127.3.4.5:8200",
        "http://[::1]:8200",
        "http://localhost:8200",
        "http://LOCALHOST:8200",
        "https://vault.example.com:8200",
    ],
)
def test_vault_over_http_is_accepted_on_loopback_only(addr: str) -> None:
    assert parse(minimal(vault={"addr": addr})).vault.addr == addr


@pytest.mark.parametrize(
    "addr",
    [
        "http://vault.example.com:8200",
        "http://10.0.0.5:8200",
        "http://localhost.example.com:8200",
        "http://[::ffff:7f00:1]:8200",
    ],
)
def test_vault_over_plain_http_elsewhere_is_refused(addr: str) -> None:
    with pytest.raises(ConfigError, match=r"^vault\.addr: plain http"):
        parse(minimal(vault={"addr": addr}))


def test_plain_http_from_vault_addr_names_the_variable() -> None:
    environ = {**TOKEN_ENV, "VAULT_ADDR": "http://vault.example.com:8200"}

    with pytest.raises(ConfigError, match=r"^VAULT_ADDR: plain http"):
        parse({}, environ)


# --- host patterns: `*` only as a whole left-most label ---


@pytest.mark.parametrize(
    "pattern", ["*.leanix.net", "acme.leanix.net", "idp.example.com", "127.0.0.1", "localhost"]
)
def test_a_sound_host_pattern_is_accepted(pattern: str) -> None:
    assert parse(minimal(exchange={"allowed_hosts": [pattern]})).exchange.allowed_hosts == (
        pattern,
    )


@pytest.mark.parametrize(
    "pattern",
    ["*leanix.net", "leanix.*", "*.net", "a.*.net", "**.x.y", "*-eu.leanix.net",
     "acme-*.leanix.net", "*.*.leanix.net", "a..leanix.net", "-a.leanix.net", "a_b.leanix.net",
     ".leanix.net", "leanix.net."],
)  # fmt: skip
@pytest.mark.parametrize("key", ["allowed_hosts", "insecure_http_hosts"])
def test_a_loose_host_pattern_is_a_config_error(key: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=rf"^exchange\.{key}\[0\]: "):
        parse(minimal(exchange={key: [pattern]}))


def test_the_shipped_config_loads_and_holds_no_secret() -> None:
    shipped = Path(__file__).resolve().parents[2] / "deploy" / "rotator.toml"

    loaded = config.load(shipped, {"CREDENTIALS_DIRECTORY": "/run/credentials/rotator.service"})

    assert loaded.alerts.webhook_urls == () and loaded.alerts.sentry_dsn == ""
