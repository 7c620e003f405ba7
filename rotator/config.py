"""The TOML configuration: loaded once, validated once, frozen.

`load(path, environ)` is the only entry point. It takes the environment as an argument so that tests
never patch `os.environ`; `VAULT_ADDR`, `VAULT_TOKEN`, `VAULT_CACERT`, `VAULT_NAMESPACE` and
`SENTRY_DSN` fill in what the file leaves unset (the file wins where both are set). Every problem
is a `ConfigError` naming the key (`exchange.timeout_seconds`) and what is wrong with its value.

Secrets may stay out of the file: `alerts.webhook_urls_file` and `alerts.sentry_dsn_file` name
files (relative paths under `$CREDENTIALS_DIRECTORY`, where systemd's `LoadCredential=` puts
them) that are read here, once. A value that may be a secret (any URL, the DSN, anything read from
a file) is never echoed in an error: the error names the key (and the line) instead.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rotator.errors import ConfigError

DEFAULT_PATH = Path("/etc/rotator/rotator.toml")
MAX_TIMEOUT_SECONDS = 300.0  # exchange.timeout_seconds at most; bounds every claim's lease

# One DNS label under leanix.net, as LeanIX's own tooling accepts (`sources.host_matches`).
DEFAULT_ALLOWED_HOSTS = ("*.leanix.net",)


@dataclass(frozen=True)
class VaultAuthConfig:
    method: str = "token"
    token_file: Path | None = None
    role_id: str | None = field(default=None, repr=False)
    role_id_file: Path | None = None
    secret_id_file: Path | None = None
    # From VAULT_TOKEN; never read from the file, so a config file never holds a Vault token.
    env_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class VaultConfig:
    addr: str
    mount: str = "secret"
    source_prefix: str = "leanix/api-tokens"
    output_prefix: str = "leanix/access-tokens"
    ca_cert: Path | None = None
    namespace: str | None = None
    auth: VaultAuthConfig = VaultAuthConfig()


@dataclass(frozen=True)
class ExchangeConfig:
    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    insecure_http_hosts: tuple[str, ...] = ()
    timeout_seconds: float = 10.0
    refresh_fraction: float = 0.8
    max_workers: int = 8
    max_backoff_seconds: float = 300.0


@dataclass(frozen=True)
class ScheduleConfig:
    check_interval_seconds: float = 60.0
    discovery_interval_seconds: float = 300.0


@dataclass(frozen=True)
class AlertsConfig:
    # Secrets (a webhook URL's path, the DSN's key): never in a repr, hence never in a log line.
    sentry_dsn: str = field(default="", repr=False)
    webhook_urls: tuple[str, ...] = field(default=(), repr=False)
    alertmanager_url: str = ""
    max_issuances_per_hour: int = 6
    repeat_interval_seconds: float = 3600.0


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = "127.0.0.1:9464"


@dataclass(frozen=True)
class ApiTokensConfig:
    """The long-lived API tokens of sources with a technical_user_id (SPEC, "API-token
    lifecycle"). A replacement interval of 0 days turns that trigger off."""

    replace_every_days: float = 0.0
    replace_before_expiry_days: float = 14.0
    lookup_interval_seconds: float = 86400.0


@dataclass(frozen=True)
class Config:
    vault: VaultConfig
    exchange: ExchangeConfig = ExchangeConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    alerts: AlertsConfig = AlertsConfig()
    metrics: MetricsConfig = MetricsConfig()
    api_tokens: ApiTokensConfig = ApiTokensConfig()
    path: Path | None = None


# --- value checkers: each takes (key, raw value) and returns the typed value or raises ---

Checker = Callable[[str, Any], Any]


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {_kind(value)}")
    return value


def _nonempty_string(key: str, value: Any) -> str:
    text = _string(key, value).strip()
    if not text:
        raise ConfigError(f"{key}: must not be empty")
    return text


def _prefix(key: str, value: Any) -> str:
    text = _nonempty_string(key, value).strip("/")
    if not text or any(part in ("", ".", "..") for part in text.split("/")):
        raise ConfigError(f"{key}: {value!r} is not a usable Vault path")
    return text


def _path(key: str, value: Any) -> Path:
    return Path(_nonempty_string(key, value))


def _number(low: float, high: float) -> Checker:
    def check(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {_kind(value)}")
        if not low <= value <= high:
            raise ConfigError(f"{key}: {value!r} is out of range [{low:g}, {high:g}]")
        return float(value)

    return check


def _integer(low: int, high: int) -> Checker:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_kind(value)}")
        if not low <= value <= high:
            raise ConfigError(f"{key}: {value!r} is out of range [{low}, {high}]")
        return value

    return check


def _fraction(key: str, value: Any) -> float:
    number = _number(0.0, 1.0)(key, value)
    if not 0.1 <= number <= 0.95:
        raise ConfigError(f"{key}: {value!r} must be between 0.1 and 0.95")
    return float(number)


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _host_patterns(key: str, value: Any) -> tuple[str, ...]:
    """Hostnames, IP literals, or `*.` followed by at least two literal labels (`*.leanix.net`):
    a `*` is one whole DNS label, the left-most, as in a TLS wildcard certificate."""
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of host patterns, got {_kind(value)}")
    patterns = []
    for index, item in enumerate(value):
        pattern = _nonempty_string(f"{key}[{index}]", item).lower()
        if not _is_host_pattern(pattern):
            raise ConfigError(
                f"{key}[{index}]: {item!r} is not a hostname, an IP address or `*.` followed by "
                "at least two labels (like `*.leanix.net`)"
            )
        patterns.append(pattern)
    return tuple(patterns)


def _is_host_pattern(pattern: str) -> bool:
    try:
        ipaddress.ip_address(pattern)
    except ValueError:
        pass
    else:
        return True
    labels = pattern.split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            return False
    return all(_LABEL.match(label) for label in labels)


_NOT_SHOWN = "(not shown: it may hold a secret)"


def _url(key: str, value: Any, *, allow_empty: bool = True) -> str:
    """An http(s) URL. Never echoed: webhook URLs carry secrets in their path, any URL may
    carry userinfo."""
    text = _string(key, value).strip()
    if not text and allow_empty:
        return ""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a malformed or out-of-range port
    except ValueError:
        raise ConfigError(
            f"{key}: not a well-formed URL (not shown: it may hold a secret)"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key}: not an http(s) URL (not shown: it may hold a secret)")
    return text


def _dsn(key: str, value: Any) -> str:
    """A Sentry DSN, `https://<public key>@<host>/<project id>`, or "" (off). Never echoed."""
    text = _string(key, value).strip()
    if not text:
        return ""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a malformed or out-of-range port
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or not parts.username
        or not parts.path.rsplit("/", 1)[-1].isdigit()
    ):
        raise ConfigError(
            f"{key}: not a Sentry DSN like https://<public key>@<host>/<project id> "
            "(not shown: it holds a key)"
        )
    return text


def _required_url(key: str, value: Any) -> str:
    return _url(key, value, allow_empty=False)


def _url_list(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of URLs, got {_kind(value)}")
    return tuple(_required_url(f"{key}[{i}]", item) for i, item in enumerate(value))


def _listen(key: str, value: Any) -> str:
    text = _string(key, value).strip()
    if not text:
        return ""
    _host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}: {text!r} is not HOST:PORT")
    return text


def _auth_method(key: str, value: Any) -> str:
    method = _string(key, value)
    if method not in ("token", "approle"):
        raise ConfigError(f"{key}: {method!r} is not one of 'token', 'approle'")
    return method


def _kind(value: Any) -> str:
    return {dict: "a table", list: "a list", bool: "a boolean", str: "a string"}.get(
        type(value), type(value).__name__
    )


# --- the schema: section -> {key: checker} ---

_SCHEMA: dict[str, dict[str, Checker]] = {
    "vault": {
        "addr": _required_url,
        "mount": _prefix,
        "source_prefix": _prefix,
        "output_prefix": _prefix,
        "ca_cert": _path,
        "namespace": _nonempty_string,
    },
    "vault.auth": {
        "method": _auth_method,
        "token_file": _path,
        "role_id": _nonempty_string,
        "role_id_file": _path,
        "secret_id_file": _path,
    },
    "exchange": {
        "allowed_hosts": _host_patterns,
        "insecure_http_hosts": _host_patterns,
        "timeout_seconds": _number(0.1, MAX_TIMEOUT_SECONDS),
        "refresh_fraction": _fraction,
        "max_workers": _integer(1, 256),
        "max_backoff_seconds": _number(1, 86400),
    },
    "schedule": {
        "check_interval_seconds": _number(1, 86400),
        "discovery_interval_seconds": _number(1, 86400),
    },
    "alerts": {
        "sentry_dsn": _dsn,
        "sentry_dsn_file": _path,
        "webhook_urls": _url_list,
        "webhook_urls_file": _path,
        "alertmanager_url": _url,
        "max_issuances_per_hour": _integer(1, 3600),
        "repeat_interval_seconds": _number(1, 7 * 86400),
    },
    "metrics": {"listen": _listen},
    "api_tokens": {
        "replace_every_days": _number(0, 3650),
        "replace_before_expiry_days": _number(0, 3650),
        "lookup_interval_seconds": _number(1, 30 * 86400),
    },
}


def _section(raw: Mapping[str, Any], name: str, nested: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check one table of the file against the schema; returns the typed values given."""
    table: Any = raw
    for part in name.split("."):
        table = table.get(part, {}) if isinstance(table, dict) else {}
        if not isinstance(table, dict):
            raise ConfigError(f"{name}: expected a table, got {_kind(table)}")
    schema = _SCHEMA[name]
    values = {}
    for key, value in table.items():
        if key in nested:
            continue
        if key not in schema:
            raise ConfigError(f"{name}.{key}: unknown key (known: {', '.join(sorted(schema))})")
        values[key] = schema[key](f"{name}.{key}", value)
    return values


def parse(raw: Mapping[str, Any], environ: Mapping[str, str], path: Path | None = None) -> Config:
    """Build a `Config` from an already-parsed TOML document and the environment.

    Raises `ConfigError` naming the first key that is unknown, of the wrong type or out of range.
    """
    for top in raw:
        if top not in ("vault", "exchange", "schedule", "alerts", "metrics", "api_tokens"):
            raise ConfigError(f"{top}: unknown section")

    vault = _section(raw, "vault", nested=("auth",))
    auth = _section(raw, "vault.auth")
    exchange = _section(raw, "exchange")
    schedule = _section(raw, "schedule")
    alerts = _section(raw, "alerts")
    metrics = _section(raw, "metrics")
    api_tokens = _section(raw, "api_tokens")

    # The environment fills in only what the file leaves unset.
    env_defaults = {
        "addr": ("VAULT_ADDR", _required_url),
        "ca_cert": ("VAULT_CACERT", _path),
        "namespace": ("VAULT_NAMESPACE", _nonempty_string),
    }
    addr_key = "vault.addr"
    for key, (variable, check) in env_defaults.items():
        if key not in vault and environ.get(variable):
            vault[key] = check(variable, environ[variable])
            if key == "addr":
                addr_key = variable
    if "addr" not in vault:
        raise ConfigError("vault.addr: required (or set VAULT_ADDR)")
    _check_vault_transport(addr_key, vault["addr"])
    _alert_secret_files(alerts, environ)
    if "sentry_dsn" not in alerts and environ.get("SENTRY_DSN"):
        alerts["sentry_dsn"] = _dsn("SENTRY_DSN", environ["SENTRY_DSN"])

    auth_config = _auth(auth, environ)
    config = Config(
        vault=VaultConfig(**vault, auth=auth_config),
        exchange=ExchangeConfig(**exchange),
        schedule=ScheduleConfig(**schedule),
        alerts=AlertsConfig(**alerts),
        metrics=MetricsConfig(**metrics),
        api_tokens=ApiTokensConfig(**api_tokens),
        path=path,
    )
    if config.vault.source_prefix == config.vault.output_prefix:
        raise ConfigError("vault.output_prefix: must differ from vault.source_prefix")
    if _is_below(config.vault.output_prefix, config.vault.source_prefix) or _is_below(
        config.vault.source_prefix, config.vault.output_prefix
    ):
        raise ConfigError(
            "vault.output_prefix: must not be inside vault.source_prefix or around it"
        )
    return config


def _check_vault_transport(key: str, addr: str) -> None:
    """Plain http only to this host: Vault's token and every secret would cross the network in
    the clear otherwise."""
    parts = urlsplit(addr)
    if parts.scheme.lower() != "http":
        return
    host = (parts.hostname or "").lower()
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ConfigError(
            f"{key}: plain http is allowed only to a loopback address (127.0.0.0/8, ::1, "
            "localhost); use https"
        )


MAX_SECRET_FILE_BYTES = 64 * 1024


def _alert_secret_files(alerts: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Replace `webhook_urls_file` / `sentry_dsn_file` in `alerts` by the values read from them."""
    for key in ("webhook_urls", "sentry_dsn"):
        file_key = f"{key}_file"
        if file_key not in alerts:
            continue
        if key in alerts:
            raise ConfigError(f"alerts.{key} and alerts.{file_key}: give one of them, not both")
        dotted = f"alerts.{file_key}"
        text = _read_secret_file(dotted, alerts.pop(file_key), environ)
        if key == "sentry_dsn":
            dsn = text.strip()
            if not dsn:
                raise ConfigError(f"{dotted}: the file is empty")
            alerts[key] = _dsn(dotted, dsn)
            continue
        urls = []
        for number, line in enumerate(text.splitlines(), start=1):
            entry = line.strip()
            if entry and not entry.startswith("#"):
                urls.append(_required_url(f"{dotted}: line {number}", entry))
        alerts[key] = tuple(urls)


def _read_secret_file(key: str, path: Path, environ: Mapping[str, str]) -> str:
    """The text of a file holding secrets; relative paths are under $CREDENTIALS_DIRECTORY."""
    if not path.is_absolute():
        credentials = environ.get("CREDENTIALS_DIRECTORY")
        if not credentials:
            raise ConfigError(
                f"{key}: the relative path {str(path)!r} needs $CREDENTIALS_DIRECTORY "
                "(systemd's LoadCredential=); or give an absolute path"
            )
        path = Path(credentials) / path
    try:
        # O_NONBLOCK: opening a FIFO must not hang; only a regular file is read.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(descriptor, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ConfigError(f"{key}: {path} is not a regular file")
            raw = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path} ({exc.strerror})") from None
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise ConfigError(f"{key}: {path} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not UTF-8 text") from None


def _auth(auth: dict[str, Any], environ: Mapping[str, str]) -> VaultAuthConfig:
    method = auth.get("method", "token")
    if method == "token":
        stray = sorted(set(auth) - {"method", "token_file"})
        if stray:
            raise ConfigError(f"vault.auth.{stray[0]}: not used with method 'token'")
        env_token = environ.get("VAULT_TOKEN") or None
        if "token_file" not in auth and env_token is None:
            raise ConfigError("vault.auth.token_file: required for method 'token' (or VAULT_TOKEN)")
        return VaultAuthConfig(**auth, env_token=env_token)
    if "token_file" in auth:
        raise ConfigError("vault.auth.token_file: not used with method 'approle'")
    # systemd's LoadCredential= puts files in $CREDENTIALS_DIRECTORY: `secret-id` and `role-id`
    # there are used when the file does not name them.
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        auth.setdefault("secret_id_file", Path(credentials) / "secret-id")
        if "role_id" not in auth:
            auth.setdefault("role_id_file", Path(credentials) / "role-id")
    if ("role_id" in auth) == ("role_id_file" in auth):
        raise ConfigError("vault.auth.role_id: give exactly one of role_id, role_id_file")
    if "secret_id_file" not in auth:
        raise ConfigError(
            "vault.auth.secret_id_file: required for method 'approle' "
            "(or a `secret-id` credential in $CREDENTIALS_DIRECTORY)"
        )
    return VaultAuthConfig(**auth)


def _is_below(path: str, parent: str) -> bool:
    return path.startswith(parent + "/")


def load(path: Path, environ: Mapping[str, str]) -> Config:
    """Read and validate the config file at `path`. Raises `ConfigError` (exit 2) on any problem."""
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    return parse(raw, environ, path)
