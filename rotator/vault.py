"""The Vault adapter: the only module that imports hvac.

`VaultStore` speaks KV v2 under one mount: it discovers source secrets, reads them with their
version, and writes output secrets with check-and-set and their `custom_metadata`.
Every hvac or transport error is converted here into rotator's own (`errors.py`): nothing from
`hvac.exceptions` or `urllib3.exceptions` escapes this module. Messages name the route and
status, never a secret value.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import urllib3.exceptions

from rotator import vaulthttp
from rotator.config import VaultConfig
from rotator.errors import (
    ConfigError,
    VaultAuthError,
    VaultConflict,
    VaultError,
    VaultUnavailable,
)
from rotator.httpenv import environ_proxies
from rotator.redact import SECRETS, fingerprint
from rotator.tokens import (
    ISSUANCE_LOG_KEY,
    ISSUANCE_LOGGED_KEY,
    AccessToken,
    format_time,
    issuance_log_add,
    issuance_log_times,
    parse_time,
)
from rotator.vaulthttp import VaultHTTP

logger = logging.getLogger(__name__)

VAULT_TIMEOUT_SECONDS = 10.0
CLAIMS_ROOT = "rotator-claims"  # per-token claims between instances, under the same mount
WRITER_ID = "rotator"


@dataclass(frozen=True)
class SecretVersion:
    """One KV v2 secret as read: its data, version and custom_metadata. `data` may hold secrets."""

    data: Mapping[str, Any] = field(repr=False)
    version: int
    custom_metadata: Mapping[str, str]

    @property
    def written_by_rotator(self) -> bool:
        """True when the data is a token rotator announced in the metadata before writing it:
        the current one, or the one before while a write is under way."""
        if self.custom_metadata.get("written_by") != WRITER_ID:
            return False
        announced = {
            self.custom_metadata.get("fingerprint"),
            self.custom_metadata.get("previous_fingerprint"),
        }
        return _data_fingerprint(self) in announced - {None, "", "-"}

    @property
    def issuances(self) -> tuple[datetime, ...] | None:
        """Issuance times from the output's issuance log (see tokens.py); None without one."""
        return issuance_log_times(self.custom_metadata.get(ISSUANCE_LOG_KEY))


@dataclass(frozen=True)
class TokenInfo:
    """rotator's own Vault token: seconds left, its TTL when created, whether renewable."""

    ttl: float
    creation_ttl: float
    renewable: bool


@dataclass(frozen=True)
class OutputMetadata:
    """An output secret's KV metadata. Holds no secret values."""

    current_version: int
    custom_metadata: Mapping[str, str]
    history: tuple[datetime, ...]  # creation times of the versions kept, oldest first

    @property
    def issuances(self) -> tuple[datetime, ...]:
        """Issuance times: from the issuance log rotator keeps in custom_metadata, or, for an
        output written without one, the creation times of the versions kept."""
        logged = issuance_log_times(self.custom_metadata.get(ISSUANCE_LOG_KEY))
        return logged if logged is not None else self.history

    @property
    def expires_at(self) -> datetime | None:
        """The expiry rotator recorded for the current token, if readable."""
        try:
            return parse_time(self.custom_metadata["expires_at"])
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class Claim:
    """A claim this instance holds: its KV version, and the output's version as the previous
    owner left it when it released the claim (None when unknown: never claimed, or the previous
    owner died holding it). While the output is still at that version, nobody wrote it since
    the caller read it, and it need not be read again under the claim."""

    version: int
    settled_output_version: int | None
    first: bool = False  # nobody had claimed this token before: no claimed write ever happened

    def output_may_have_changed(self, read_version: int) -> bool:
        """Whether a claimed exchange by another instance may have written the output since the
        caller read it at `read_version` (0: absent), so that it must be read again."""
        return not self.first and self.settled_output_version != read_version


@contextmanager
def _mapped(action: str, path: str) -> Iterator[None]:
    """Translate hvac and transport errors raised inside the block into rotator's error tree."""
    try:
        yield
    except (hvac.exceptions.Unauthorized, hvac.exceptions.Forbidden) as exc:
        raise VaultAuthError(
            f"{action} {path}: Vault refused rotator's token ({_why(exc)})"
        ) from None
    except hvac.exceptions.InvalidRequest as exc:
        if "check-and-set" in _why(exc):
            raise VaultConflict(f"{action} {path}: written by someone else meanwhile") from None
        raise VaultError(f"{action} {path}: Vault rejected the request ({_why(exc)})") from None
    except (
        hvac.exceptions.VaultDown,
        hvac.exceptions.InternalServerError,
        hvac.exceptions.BadGateway,
        hvac.exceptions.RateLimitExceeded,
        hvac.exceptions.VaultNotInitialized,
    ) as exc:
        raise VaultUnavailable(f"{action} {path}: Vault is unavailable ({_why(exc)})") from None
    except hvac.exceptions.VaultError as exc:
        raise VaultError(f"{action} {path}: Vault answered an error ({_why(exc)})") from None
    except vaulthttp.UnusableAnswer as exc:  # too large, not JSON, nested too deeply
        raise VaultError(f"{action} {path}: {exc}") from None
    except vaulthttp.AnswerTooSlow as exc:  # before TimeoutError: it is a subclass
        raise VaultUnavailable(f"{action} {path}: {exc}") from None
    except urllib3.exceptions.SSLError:
        raise VaultUnavailable(f"{action} {path}: TLS handshake with Vault failed") from None
    except urllib3.exceptions.NewConnectionError:  # before TimeoutError: it is a subclass
        raise VaultUnavailable(f"{action} {path}: cannot connect to Vault") from None
    except urllib3.exceptions.TimeoutError:
        raise VaultUnavailable(f"{action} {path}: Vault did not answer in time") from None
    except urllib3.exceptions.HTTPError as exc:
        raise VaultUnavailable(
            f"{action} {path}: cannot reach Vault ({type(exc).__name__})"
        ) from None


def _why(exc: hvac.exceptions.VaultError) -> str:
    """Vault's own error strings (e.g. 'permission denied'), which never carry secret values."""
    errors = exc.errors or []
    text = (
        "; ".join(str(error) for error in errors)
        if errors
        else str(exc.args[0] if exc.args else "")
    )
    return " ".join(text.split())[:200] or type(exc).__name__


class VaultStore:
    """KV v2 access for one mount, source prefix and output prefix."""

    def __init__(self, client: hvac.Client, mount: str, source_prefix: str, output_prefix: str):
        self._auth_config: VaultConfig | None = None
        self._token_file_stamp: tuple[int, int, int] | None = None
        self._detailed_listing = True  # until the server or the policy says otherwise
        self._client = client
        self._kv = client.secrets.kv.v2
        self.mount = mount
        self.source_prefix = source_prefix
        self.output_prefix = output_prefix

    # --- connection ---------------------------------------------------------------------------

    @classmethod
    def connect(cls, config: VaultConfig, pool_size: int = 10) -> VaultStore:
        """A store logged in with the configured auth method.

        Raises `VaultAuthError` when Vault refuses the credentials, `VaultUnavailable` when it
        cannot be reached, `ConfigError` when a credential file cannot be read.
        """
        # Proxies resolved once (see httpenv.py); TLS trust from ca_cert / VAULT_CACERT, else the
        # system's trust store.
        proxies = environ_proxies(config.addr, os.environ)
        scheme = config.addr.split(":", 1)[0].lower()
        session = VaultHTTP(
            ca_cert=str(config.ca_cert) if config.ca_cert else None,
            proxy=proxies.get(scheme) or proxies.get("all"),
            pool_size=pool_size,
        )
        client = hvac.Client(
            url=config.addr,
            timeout=VAULT_TIMEOUT_SECONDS,
            namespace=config.namespace,
            session=session,
            # Vault's own token must not follow a redirect to somewhere else either.
            allow_redirects=False,
        )
        store = cls(client, config.mount, config.source_prefix, config.output_prefix)
        store.login(config)
        return store

    def login(self, config: VaultConfig) -> None:
        """Authenticate, and remember how for `login_again`.

        token: `VAULT_TOKEN` or `token_file` (checked with `GET auth/token/lookup-self`);
        approle: `POST auth/approle/login` with role_id and the secret-id file's content.
        """
        self._auth_config = config
        auth = config.auth
        if auth.method == "token":
            if auth.token_file:
                self._token_file_stamp = _stamp(auth.token_file)
                token = _read_secret_file(auth.token_file, "vault.auth.token_file")
            else:
                token = auth.env_token or ""
            SECRETS.register(token)
            self._client.token = token
            self.token_info()
            return
        role_id = auth.role_id or _read_secret_file(auth.role_id_file, "vault.auth.role_id_file")
        secret_id = _read_secret_file(auth.secret_id_file, "vault.auth.secret_id_file")
        SECRETS.register(secret_id)
        with _mapped("log in at", "auth/approle/login"):
            self._client.auth.approle.login(role_id=role_id, secret_id=secret_id)
        SECRETS.register(self._client.token)

    def login_again(self) -> None:
        """Log in anew the way `login` did (approle), or re-read the token file."""
        if self._auth_config is None:
            raise VaultAuthError("no login to repeat")
        self.login(self._auth_config)

    def token_file_changed(self) -> bool:
        """True when the configured token_file was rewritten since it was read (a Vault Agent
        sink renews it that way)."""
        config = self._auth_config
        if config is None or config.auth.method != "token" or config.auth.token_file is None:
            return False
        return _stamp(config.auth.token_file) != self._token_file_stamp

    def token_info(self) -> TokenInfo:
        """rotator's own token as Vault sees it (`GET auth/token/lookup-self`). Raises
        VaultUnavailable or VaultAuthError: this is also the daemon's health probe of Vault."""
        with _mapped("look up", "auth/token/lookup-self"):
            data = self._client.auth.token.lookup_self()["data"]
        return TokenInfo(
            ttl=float(data.get("ttl") or 0),
            creation_ttl=float(data.get("creation_ttl") or 0),
            renewable=bool(data.get("renewable")),
        )

    def renew_token(self) -> float:
        """Renew rotator's own token (`POST auth/token/renew-self`); returns its new TTL."""
        with _mapped("renew", "auth/token/renew-self"):
            response = self._client.auth.token.renew_self()
        return float(response["auth"].get("lease_duration") or 0)

    def token_ttl(self) -> float:
        """Seconds left on rotator's own token (0: it does not expire)."""
        return self.token_info().ttl

    def is_up(self) -> bool:
        """True when Vault answers, is unsealed and accepts rotator's token (`sys/health`)."""
        try:
            with _mapped("check", "sys/health"):
                health = self._client.sys.read_health_status(method="GET")
                sealed = isinstance(health, dict) and health.get("sealed", False)
                if sealed:
                    return False
                self._client.auth.token.lookup_self()
        except VaultError:
            return False
        return True

    # --- sources ------------------------------------------------------------------------------

    def list_sources(self) -> list[str]:
        """Names of every secret below the source prefix, recursively (`LIST <mount>/metadata/...`).

        A prefix that does not exist yet lists as empty.
        """
        names: list[str] = []
        pending = [""]
        while pending:
            folder = pending.pop()
            path = f"{self.source_prefix}/{folder}".rstrip("/")
            try:
                listing = self._call("list", path, self._kv.list_secrets)
            except _NotFound:
                continue
            for key in listing["data"]["keys"]:
                if key.endswith("/"):
                    pending.append(folder + key)
                else:
                    names.append(folder + key)
        return sorted(names)

    def read_source(self, name: str) -> SecretVersion | None:
        """The current version of a source secret (`GET <mount>/data/<source_prefix>/<name>`);
        None when it does not exist or its current version is deleted."""
        return self._read(f"{self.source_prefix}/{name}")

    # --- outputs ------------------------------------------------------------------------------

    def read_output(self, name: str) -> SecretVersion | None:
        """The current output secret (`GET <mount>/data/<output_prefix>/<name>`), or None."""
        return self._read(f"{self.output_prefix}/{name}")

    def write_output(
        self,
        name: str,
        token: AccessToken,
        current: SecretVersion | None,
        keep_versions: int = 10,
    ) -> int:
        """Store `token` as the output secret if it is still at `current`'s version (absent: 0).

        Routes, in order: `POST <mount>/metadata/<path>` announcing the new token's fingerprint,
        `POST <mount>/data/<path>` with `options.cas`, then `POST <mount>/metadata/<path>` with
        the new `issued_at`/`expires_at` and the issuance log (tokens.py) counting this token,
        unless it is the token counted last being written back. Announcing first means a reader
        never mistakes rotator's own write, seen half-way, for a foreign one (see
        `SecretVersion.written_by_rotator`). A successful check-and-set is Vault's word that
        exactly these fields are the new version, so nothing is read back. Returns the new
        version. Raises `VaultConflict` when someone else wrote first.
        """
        path = f"{self.output_prefix}/{name}"
        fields = token.fields()
        previous = ""
        if current is not None:
            previous = (
                _data_fingerprint(current)
                if current.written_by_rotator
                else current.custom_metadata.get("fingerprint", "")
            )
        metadata = {
            **(current.custom_metadata if current is not None else {}),
            "written_by": WRITER_ID,
            "fingerprint": token.fingerprint,
            "previous_fingerprint": previous or "-",  # Vault refuses empty values
        }
        self._call(
            "write metadata of",
            path,
            self._kv.update_metadata,
            custom_metadata=metadata,
            max_versions=keep_versions,
        )
        response = self._call(
            "write",
            path,
            self._kv.create_or_update_secret,
            secret=fields,
            cas=current.version if current is not None else 0,
        )
        version = int(response["data"]["version"])
        if metadata.get(ISSUANCE_LOGGED_KEY) != token.fingerprint:  # not a write-back
            metadata[ISSUANCE_LOG_KEY] = issuance_log_add(
                metadata.get(ISSUANCE_LOG_KEY), token.issued_at
            )
            metadata[ISSUANCE_LOGGED_KEY] = token.fingerprint
        metadata["issued_at"] = format_time(token.issued_at)
        metadata["expires_at"] = format_time(token.expires_at)
        self._call(
            "write metadata of",
            path,
            self._kv.update_metadata,
            custom_metadata=metadata,
            max_versions=keep_versions,
        )
        return version

    def read_output_metadata(self, name: str) -> OutputMetadata | None:
        """The output secret's metadata (`GET <mount>/metadata/<output_prefix>/<name>`): its
        current version, custom_metadata and the creation times of the versions kept. None when
        there is no output yet. One cheap request: what the daemon's periodic check reads per
        token where `list_output_metadata` is not available."""
        path = f"{self.output_prefix}/{name}"
        try:
            response = self._call("read metadata of", path, self._kv.read_secret_metadata)
        except _NotFound:
            return None
        return _output_metadata(response["data"])

    def list_output_metadata(self, page_size: int = 1000) -> dict[str, OutputMetadata] | None:
        """Every output's metadata by name, from OpenBao's detailed listing (`LIST
        <mount>/detailed-metadata/<output_prefix>/...`, one request per folder and page of
        `page_size`), instead of one read per output. None when the server has no such listing
        (HashiCorp Vault) or rotator's policy does not grant it: then read one by one.
        """
        if not self._detailed_listing:
            return None
        found: dict[str, OutputMetadata] = {}
        pending = [""]
        while pending:
            folder = pending.pop()
            after = ""
            while True:
                try:
                    page = self._detailed_page(f"{self.output_prefix}/{folder}", page_size, after)
                except _NotFound as exc:
                    if exc.unsupported:
                        logger.info("Vault has no detailed metadata listing; reading one by one")
                        self._detailed_listing = False
                        return None
                    if not folder and not after:
                        return None  # no outputs yet, or no listing: nothing to save
                    break  # nothing after the last page, or a folder emptied since listed
                except VaultAuthError:
                    logger.warning(
                        "rotator's Vault policy does not grant LIST on %s/detailed-metadata/%s; "
                        "reading outputs one by one (see deploy/vault/rotator-policy.hcl)",
                        self.mount,
                        self.output_prefix,
                    )
                    self._detailed_listing = False
                    return None
                keys = page.get("keys") or []
                info = page.get("key_info") or {}
                for key in keys:
                    if key.endswith("/"):
                        pending.append(folder + key)
                    elif isinstance(info.get(key), dict):
                        found[folder + key] = _output_metadata(info[key])
                if len(keys) < page_size:
                    break
                after = keys[-1]
        return found

    def _detailed_page(self, path: str, page_size: int, after: str) -> dict[str, Any]:
        url = f"/v1/{self.mount}/detailed-metadata/{path.rstrip('/')}"
        params = {"limit": page_size, **({"after": after} if after else {})}
        with _mapped("list metadata of", f"{self.mount}/{path}"):
            try:
                response = self._client.adapter.list(url, params=params)
            except hvac.exceptions.InvalidPath as exc:
                raise _NotFound(unsupported="unsupported path" in _why(exc)) from None
            except hvac.exceptions.UnexpectedError as exc:  # 405 "unsupported operation"
                if "unsupported" in _why(exc):
                    raise _NotFound(unsupported=True) from None
                raise
        return dict(response["data"]) if isinstance(response, dict) else {}

    def output_issuances(self, name: str) -> tuple[datetime, ...]:
        """The output's issuance times (`OutputMetadata.issuances`); empty when absent."""
        metadata = self.read_output_metadata(name)
        return metadata.issuances if metadata is not None else ()

    # --- coordination between instances ---------------------------------------------------------

    def claim(
        self,
        name: str,
        owner: str,
        now: datetime,
        lease: timedelta,
    ) -> Claim | None:
        """Claim the right to exchange `name` for `lease`, or None when another owner's claim is
        live or another owner claimed first.

        A claim is a KV v2 secret at `<mount>/rotator-claims/<output_prefix>/<name>` holding the
        owner and its expiry, written with check-and-set against the version read: of two
        instances claiming at once, exactly one wins. A dead owner's claim lapses by itself.

        Every claim reads first, also the owner's own next one: an instance that could skip the
        read would always beat the others to it and keep every token it ever took.
        """
        path = self._claim_path(name)
        record = {"owner": owner, "until": format_time(now + lease)}
        existing = self._read(path)
        if existing is not None and existing.data.get("owner") != owner:
            try:
                until = parse_time(str(existing.data.get("until", "")))
            except ValueError:
                until = now  # unreadable: treat as lapsed
            if until > now:
                return None
        try:
            response = self._call(
                "claim",
                path,
                self._kv.create_or_update_secret,
                secret=record,
                cas=existing.version if existing is not None else 0,
            )
        except VaultConflict:
            return None
        # With no claim before ours (check-and-set at 0 won), no instance ever exchanged this
        # token under a claim, so none can have stored one since the caller's read.
        version = int(response["data"]["version"])
        if existing is None:
            return Claim(version, None, first=True)
        return Claim(version, _settled_output_version(existing))

    def release(self, name: str, owner: str, claim: Claim, output_version: int) -> None:
        """End `claim` early, recording `output_version`, the output's version as the owner
        leaves it; best effort (a claim lapses anyway). The check-and-set on the claim's version
        leaves a claim someone else took since untouched."""
        try:
            self._call(
                "release",
                self._claim_path(name),
                self._kv.create_or_update_secret,
                secret={
                    "owner": owner,
                    "until": "1970-01-01T00:00:00Z",
                    "output_version": output_version,
                },
                cas=claim.version,
            )
        except VaultError as exc:
            logger.debug("releasing the claim on %s failed: %s", name, exc)

    def _claim_path(self, name: str) -> str:
        return f"{CLAIMS_ROOT}/{self.output_prefix}/{name}"

    def write_source(self, name: str, data: Mapping[str, Any]) -> int:
        """Create or replace a source secret (for `rotator demo`); returns its version."""
        path = f"{self.source_prefix}/{name}"
        response = self._call("write", path, self._kv.create_or_update_secret, secret=dict(data))
        return int(response["data"]["version"])

    # --- plumbing -----------------------------------------------------------------------------

    def _read(self, path: str) -> SecretVersion | None:
        try:
            response = self._call(
                "read", path, self._kv.read_secret_version, raise_on_deleted_version=True
            )
        except _NotFound:
            return None
        data = response["data"]
        metadata = data.get("metadata") or {}
        return SecretVersion(
            data=data.get("data") or {},
            version=int(metadata.get("version", 0)),
            custom_metadata=metadata.get("custom_metadata") or {},
        )

    def _call(self, action: str, path: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        """Run one hvac call on `path` under the mount; 404 becomes `_NotFound`, every other
        failure one of rotator's own errors."""
        with _mapped(action, f"{self.mount}/{path}"):
            try:
                return method(path, mount_point=self.mount, **kwargs)
            except hvac.exceptions.InvalidPath:
                raise _NotFound from None


def _settled_output_version(claim: SecretVersion | None) -> int | None:
    """The output version a released claim recorded; None for a claim never released (or one
    from before releases recorded it) and when there was no claim at all."""
    if claim is None:
        return None
    recorded = claim.data.get("output_version")
    return recorded if isinstance(recorded, int) and not isinstance(recorded, bool) else None


def _data_fingerprint(secret: SecretVersion) -> str:
    token = secret.data.get("access_token")
    return fingerprint(token) if isinstance(token, str) else ""


class _NotFound(Exception):
    """Internal: the route answered 404. Never leaves this module. `unsupported`: the server
    does not know the route at all (as opposed to nothing being there)."""

    def __init__(self, unsupported: bool = False):
        super().__init__()
        self.unsupported = unsupported


def _output_metadata(data: Mapping[str, Any]) -> OutputMetadata:
    """An OutputMetadata from a KV v2 metadata document (a read, or one detailed-listing entry)."""
    versions = data.get("versions") or {}
    history = sorted(
        parse_time(v["created_time"]) for v in versions.values() if v.get("created_time")
    )
    return OutputMetadata(
        current_version=int(data.get("current_version") or 0),
        custom_metadata=data.get("custom_metadata") or {},
        history=tuple(history),
    )


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_ino, stat.st_size)


def _read_secret_file(path: Path | None, key: str) -> str:
    if path is None:
        raise ConfigError(f"{key}: not set")
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path} ({exc.strerror})") from None
    if not value:
        raise ConfigError(f"{key}: {path} is empty")
    return value
