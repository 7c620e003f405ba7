"""The Vault adapter: the only module that imports hvac.

`VaultStore` speaks KV v2 under one mount: it discovers source secrets, reads them with their
version, writes output secrets and their metadata with check-and-set, and reads and writes the
claims instances coordinate by. What goes into those routes and what comes back means is
`records.py`'s business; this module only speaks the routes. `VaultAuth` is rotator's own Vault
login: the auth method, renewal, a token file that changes under it.

Every hvac or transport error is converted here into rotator's own (`errors.py`): nothing from
`hvac.exceptions` or `urllib3.exceptions` escapes this module. Messages name the route and
status, never a secret value.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import urllib3.exceptions

from rotator import vaulthttp
from rotator.config import VaultAuthConfig, VaultConfig
from rotator.errors import (
    ConfigError,
    VaultAuthError,
    VaultConflict,
    VaultError,
    VaultUnavailable,
)
from rotator.httpenv import environ_proxies
from rotator.records import OutputMetadata, SecretVersion
from rotator.redact import SECRETS
from rotator.tokens import parse_time
from rotator.vaulthttp import VaultHTTP

logger = logging.getLogger(__name__)

VAULT_TIMEOUT_SECONDS = 10.0
CLAIMS_ROOT = "rotator-claims"  # per-token claims between instances, under the same mount
INSTANCES_ROOT = "rotator-instances"  # each running daemon's registration, under the same mount


@dataclass(frozen=True)
class TokenInfo:
    """rotator's own Vault token: seconds left, its TTL when created, whether renewable."""

    ttl: float
    creation_ttl: float
    renewable: bool


@dataclass(frozen=True)
class TokenIdentity:
    """Who rotator's own Vault token is, as the audit log names it: its display name, its
    entity id ("" for a token without an entity, such as a root or dev token), its policies
    (sorted)."""

    display_name: str
    entity_id: str
    policies: tuple[str, ...]


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


def connect(config: VaultConfig, pool_size: int = 10) -> hvac.Client:
    """An hvac client for `config.addr` on rotator's own transport (`vaulthttp.py`): pooled,
    fixed timeout, never a redirect. Not logged in yet (`VaultAuth.login`)."""
    # Proxies resolved once (see httpenv.py); TLS trust from ca_cert / VAULT_CACERT, else the
    # system's trust store.
    proxies = environ_proxies(config.addr, os.environ)
    scheme = config.addr.split(":", 1)[0].lower()
    session = VaultHTTP(
        ca_cert=str(config.ca_cert) if config.ca_cert else None,
        proxy=proxies.get(scheme) or proxies.get("all"),
        pool_size=pool_size,
    )
    return hvac.Client(
        url=config.addr,
        timeout=VAULT_TIMEOUT_SECONDS,
        namespace=config.namespace,
        session=session,
        # Vault's own token must not follow a redirect to somewhere else either.
        allow_redirects=False,
    )


class VaultAuth:
    """rotator's own login at Vault, on a client it shares with `VaultStore`."""

    def __init__(self, client: hvac.Client, config: VaultAuthConfig) -> None:
        self._client = client
        self._config = config
        self._token_file_stamp: tuple[int, int, int] | None = None

    def login(self) -> None:
        """Authenticate with the configured method.

        token: `VAULT_TOKEN` or `token_file` (checked with `GET auth/token/lookup-self`);
        approle: `POST auth/approle/login` with role_id and the secret-id file's content.
        Raises `VaultAuthError` when Vault refuses, `VaultUnavailable` when it cannot be reached,
        `ConfigError` when a credential file cannot be read.
        """
        auth = self._config
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

    def token_file_changed(self) -> bool:
        """True when the configured token_file was rewritten since it was read (a Vault Agent
        sink renews it that way)."""
        auth = self._config
        if auth.method != "token" or auth.token_file is None:
            return False
        return _stamp(auth.token_file) != self._token_file_stamp

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

    def token_identity(self) -> TokenIdentity:
        """rotator's own token's identity (`GET auth/token/lookup-self`), to tell rotator's own
        requests in an audit log from everyone else's. Raises like `token_info`."""
        with _mapped("look up", "auth/token/lookup-self"):
            data = self._client.auth.token.lookup_self()["data"]
        return TokenIdentity(
            display_name=str(data.get("display_name") or ""),
            entity_id=str(data.get("entity_id") or ""),
            policies=tuple(sorted(str(policy) for policy in data.get("policies") or ())),
        )

    def renew_token(self) -> float:
        """Renew rotator's own token (`POST auth/token/renew-self`); returns its new TTL."""
        with _mapped("renew", "auth/token/renew-self"):
            response = self._client.auth.token.renew_self()
        return float(response["auth"].get("lease_duration") or 0)


class VaultStore:
    """KV v2 access for one mount, source prefix and output prefix; `auth` is its login."""

    def __init__(
        self,
        client: hvac.Client,
        mount: str,
        source_prefix: str,
        output_prefix: str,
        auth: VaultAuth,
    ) -> None:
        self._detailed_listing_available = True  # until the server says it has none
        self._detailed_refused: set[str] = set()  # prefixes the policy does not grant it on
        self._client = client
        self._kv = client.secrets.kv.v2
        self.auth = auth
        self.mount = mount
        self.source_prefix = source_prefix
        self.output_prefix = output_prefix

    @classmethod
    def connect(cls, config: VaultConfig, pool_size: int = 10) -> VaultStore:
        """A store logged in with the configured auth method (`VaultAuth.login`, whose errors
        it raises)."""
        client = connect(config, pool_size)
        auth = VaultAuth(client, config.auth)
        auth.login()
        return cls(client, config.mount, config.source_prefix, config.output_prefix, auth)

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

    def read_source_version(self, name: str, version: int) -> SecretVersion | None:
        """One earlier version of a source secret (`GET <mount>/data/<source_prefix>/<name>?
        version=N`), to verify an output exchanged from it; None when it is gone."""
        return self._read(f"{self.source_prefix}/{name}", version=version)

    def list_source_versions(self) -> dict[str, int] | None:
        """Every source's current version by name, from the detailed listing (see
        `list_output_metadata`); None where there is none: then read each source."""
        listed = self._detailed_listing(self.source_prefix)
        if listed is None:
            return None
        return {name: int(entry.get("current_version") or 0) for name, entry in listed.items()}

    def write_source(self, name: str, data: Mapping[str, Any], cas: int | None = None) -> int:
        """Write a new version of a source secret (`POST <mount>/data/<source_prefix>/<name>`),
        with check-and-set against version `cas` when given (0: it must not exist yet). Returns
        the new version; raises `VaultConflict` when someone else wrote first."""
        path = f"{self.source_prefix}/{name}"
        options = {"cas": cas} if cas is not None else {}
        response = self._call(
            "write", path, self._kv.create_or_update_secret, secret=dict(data), **options
        )
        return int(response["data"]["version"])

    def write_source_metadata(self, name: str, custom_metadata: Mapping[str, str]) -> None:
        """Replace a source secret's custom_metadata (`POST <mount>/metadata/<source_prefix>/
        <name>`); KV v2 has no check-and-set for metadata (see `lifecycle.py` for why that is
        enough)."""
        self._call(
            "write metadata of",
            f"{self.source_prefix}/{name}",
            self._kv.update_metadata,
            custom_metadata=dict(custom_metadata),
        )

    def can_update_source(self, name: str) -> bool:
        """Whether rotator's token may write `name`'s data and metadata (`POST
        sys/capabilities-self`), as an API-token replacement needs."""
        data_path = f"{self.mount}/data/{self.source_prefix}/{name}"
        metadata_path = f"{self.mount}/metadata/{self.source_prefix}/{name}"
        with _mapped("look up capabilities on", data_path):
            answer = self._client.sys.get_capabilities([data_path, metadata_path])
        found = answer.get("data", answer) if isinstance(answer, dict) else {}

        def allows(path: str) -> bool:
            capabilities = found.get(path) or []
            return "root" in capabilities or "update" in capabilities

        return allows(data_path) and allows(metadata_path)

    # --- outputs ------------------------------------------------------------------------------

    def read_output(self, name: str) -> SecretVersion | None:
        """The current output secret (`GET <mount>/data/<output_prefix>/<name>`), `deleted`
        when its current version is deleted, None when there is none at all."""
        return self._read(f"{self.output_prefix}/{name}", keep_deleted=True)

    def write_output_data(self, name: str, fields: Mapping[str, Any], cas: int) -> int:
        """Store `fields` as the output secret if it is still at version `cas` (0: absent)
        (`POST <mount>/data/<output_prefix>/<name>` with `options.cas`). A successful
        check-and-set is Vault's word that exactly these fields are the new version, so nothing
        is read back. Returns the new version; raises `VaultConflict` when someone else wrote
        first."""
        response = self._call(
            "write",
            f"{self.output_prefix}/{name}",
            self._kv.create_or_update_secret,
            secret=dict(fields),
            cas=cas,
        )
        return int(response["data"]["version"])

    def write_output_metadata(
        self, name: str, custom_metadata: Mapping[str, str], keep_versions: int
    ) -> None:
        """Replace the output's custom_metadata and keep `keep_versions` versions
        (`POST <mount>/metadata/<output_prefix>/<name>`)."""
        self._call(
            "write metadata of",
            f"{self.output_prefix}/{name}",
            self._kv.update_metadata,
            custom_metadata=dict(custom_metadata),
            max_versions=keep_versions,
        )

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
        listed = self._detailed_listing(self.output_prefix, page_size)
        if listed is None:
            return None
        return {name: _output_metadata(entry) for name, entry in listed.items()}

    def _detailed_listing(
        self, prefix: str, page_size: int = 1000
    ) -> dict[str, Mapping[str, Any]] | None:
        """The metadata document of every secret below `prefix`, by name relative to it; None
        when the listing is not available (and, once refused, never asked for again)."""
        if not self._detailed_listing_available or prefix in self._detailed_refused:
            return None
        found: dict[str, Mapping[str, Any]] = {}
        pending = [""]
        while pending:
            folder = pending.pop()
            after = ""
            while True:
                try:
                    page = self._detailed_page(f"{prefix}/{folder}", page_size, after)
                except _NotFound as exc:
                    if exc.unsupported:
                        logger.info("Vault has no detailed metadata listing; reading one by one")
                        self._detailed_listing_available = False
                        return None
                    if not folder and not after:
                        return {}  # nothing below the prefix yet
                    break  # nothing after the last page, or a folder emptied since listed
                except VaultAuthError:
                    logger.warning(
                        "rotator's Vault policy does not grant LIST on %s/detailed-metadata/%s; "
                        "reading secrets one by one (see deploy/vault/rotator-policy.hcl)",
                        self.mount,
                        prefix,
                    )
                    self._detailed_refused.add(prefix)
                    return None
                keys = page.get("keys") or []
                info = page.get("key_info") or {}
                for key in keys:
                    if key.endswith("/"):
                        pending.append(folder + key)
                    elif isinstance(info.get(key), dict):
                        found[folder + key] = info[key]
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

    def output_issuances(self, name: str, now: datetime) -> tuple[datetime, ...]:
        """The output's issuance times as of `now` (`OutputMetadata.issuances`, from
        `read_output_metadata`); empty when there is no output."""
        metadata = self.read_output_metadata(name)
        return metadata.issuances(now) if metadata is not None else ()

    # --- claims between instances ---------------------------------------------------------------

    def read_claim(self, name: str) -> SecretVersion | None:
        """The claim on `name` (`GET <mount>/data/rotator-claims/<output_prefix>/<name>`)."""
        return self._read(self._claim_path(name))

    def write_claim(self, name: str, record: Mapping[str, Any], cas: int) -> int | None:
        """Write the claim on `name` if it is still at version `cas` (0: none yet)
        (`POST <mount>/data/rotator-claims/<output_prefix>/<name>`). Returns the claim's new
        version, or None when someone else wrote it first."""
        try:
            response = self._call(
                "claim",
                self._claim_path(name),
                self._kv.create_or_update_secret,
                secret=dict(record),
                cas=cas,
            )
        except VaultConflict:
            return None
        return int(response["data"]["version"])

    def _claim_path(self, name: str) -> str:
        return f"{CLAIMS_ROOT}/{self.output_prefix}/{name}"

    # --- the instance registry ------------------------------------------------------------------

    def announce_instance(self, instance: str, record: Mapping[str, str]) -> None:
        """Write this instance's registration (`POST <mount>/metadata/rotator-instances/
        <output_prefix>/<instance>`): custom_metadata only, one small request per check."""
        self._call(
            "register at",
            self._instance_path(instance),
            self._kv.update_metadata,
            custom_metadata=dict(record),
            max_versions=1,
        )

    def withdraw_instance(self, instance: str) -> None:
        """Delete this instance's registration (`DELETE <mount>/metadata/rotator-instances/
        <output_prefix>/<instance>`), so the others know at their next check."""
        with suppress(_NotFound):
            self._call(
                "deregister at",
                self._instance_path(instance),
                self._kv.delete_metadata_and_all_versions,
            )

    def list_instances(self) -> dict[str, Mapping[str, str]]:
        """Every registration by instance id: one detailed listing, else a LIST and one
        metadata read per instance (`rotator-instances/<output_prefix>/`)."""
        prefix = f"{INSTANCES_ROOT}/{self.output_prefix}"
        listed = self._detailed_listing(prefix)
        if listed is not None:
            return {name: _custom(entry) for name, entry in listed.items() if "/" not in name}
        try:
            keys = self._call("list", prefix, self._kv.list_secrets)["data"]["keys"]
        except _NotFound:
            return {}
        found: dict[str, Mapping[str, str]] = {}
        for key in keys:
            if key.endswith("/"):
                continue
            try:
                entry = self._call(
                    "read metadata of", f"{prefix}/{key}", self._kv.read_secret_metadata
                )
            except _NotFound:
                continue  # withdrawn since listed
            found[key] = _custom(entry["data"])
        return found

    def _instance_path(self, instance: str) -> str:
        return f"{INSTANCES_ROOT}/{self.output_prefix}/{instance}"

    # --- plumbing -----------------------------------------------------------------------------

    def _read(
        self, path: str, *, version: int | None = None, keep_deleted: bool = False
    ) -> SecretVersion | None:
        """The current (or the given) version at `path`; None when there is none. With
        `keep_deleted`, a deleted or destroyed version comes back `deleted`, with its version
        and custom_metadata (check-and-set must name it, and its issuance log counts)."""
        try:
            response = self._call(
                "read",
                path,
                self._kv.read_secret_version,
                version=version,
                raise_on_deleted_version=True,
            )
        except _NotFound as exc:
            return _deleted_version(exc.body) if keep_deleted else None
        data = response["data"]
        metadata = data.get("metadata") or {}
        return SecretVersion(
            data=data.get("data") or {},
            version=int(metadata.get("version", 0)),
            custom_metadata=metadata.get("custom_metadata") or {},
            created=_created(metadata),
        )

    def _call(self, action: str, path: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        """Run one hvac call on `path` under the mount; 404 becomes `_NotFound`, every other
        failure one of rotator's own errors."""
        with _mapped(action, f"{self.mount}/{path}"):
            try:
                return method(path, mount_point=self.mount, **kwargs)
            except hvac.exceptions.InvalidPath as exc:
                raise _NotFound(body=exc.json) from None


class _NotFound(Exception):
    """Internal: the route answered 404. Never leaves this module. `unsupported`: the server
    does not know the route at all (as opposed to nothing being there); `body`: the answer's
    JSON (a deleted version's metadata comes with its 404)."""

    def __init__(self, unsupported: bool = False, body: Any = None):
        super().__init__()
        self.unsupported = unsupported
        self.body = body


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


def _custom(metadata: Mapping[str, Any]) -> Mapping[str, str]:
    custom = metadata.get("custom_metadata")
    return custom if isinstance(custom, dict) else {}


def _deleted_version(body: Any) -> SecretVersion | None:
    """The deleted or destroyed version a 404 of a data read describes, if it describes one."""
    try:
        metadata = body["data"]["metadata"]
        version = int(metadata["version"])
    except (KeyError, TypeError, ValueError):
        return None
    if version < 1:
        return None
    return SecretVersion(
        data={},
        version=version,
        custom_metadata=_custom(metadata),
        created=_created(metadata),
        deleted=True,
    )


def _created(metadata: Mapping[str, Any]) -> datetime | None:
    try:
        return parse_time(str(metadata["created_time"]))
    except (KeyError, ValueError):
        return None


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
