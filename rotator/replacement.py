"""The API-token lifecycle, executed: replacing an API token at MTM in the five staged steps of
SPEC, promoting `api_token_next`, looking technical users up, and proving a replacement would
be allowed (`--dry-run`). Every decision is `lifecycle.plan_api_token`'s; this module performs
the step it names and asks again, until the plan says wait.

The steps of a replacement, each written down before it happens so that a restart rolls it
forward (`lifecycle.py`):

1. under this instance's claim on the token, record the intent in the source's custom_metadata;
2. `PUT <mtm>/technicalusers/{id}/replaceToken` with the admin source's access token;
3. store the new token as a new version of the source (check-and-set, every other field kept),
   held in memory and written again until Vault takes it; the old version stays in KV history;
4. the rotation exchanges the new token (the source version changed) and writes the output;
5. clear the intent.

The new API token never reaches a log line: it is registered with the redactor the moment MTM
hands it over, and held only in memory (`memory.HeldApiToken`) until Vault has it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from rotator.errors import (
    ApiTokenRejected,
    MtmError,
    MtmRefused,
    RotatorError,
    SourceError,
    VaultConflict,
    VaultError,
)
from rotator.inventory import Inventory, ManagedSource, Standing, Workspace, compare
from rotator.lifecycle import (
    UNPROVEN,
    WHY_TEXT,
    ApiTokenFacts,
    LifecyclePlan,
    LifecycleRules,
    Proof,
    Step,
    Verdict,
    Why,
    cleared_metadata,
    intent_metadata,
    plan_api_token,
    read_intent,
    stored_metadata,
)
from rotator.memory import HeldApiToken
from rotator.mtm import MtmClient, TechnicalUser
from rotator.outcome import ApiTokenOutcome, Check, Outcome, Planned, Replacement
from rotator.records import SecretVersion
from rotator.redact import SECRETS
from rotator.rotation import Rotator, release_claim, take_claim
from rotator.sources import Source, is_valid_name
from rotator.tokens import AccessToken, format_time
from rotator.vault import VaultStore

logger = logging.getLogger(__name__)

MAX_STEPS = 8  # steps of one pass; each changes what the next plan sees
STORE_RETRY = timedelta(seconds=5)  # a new API token Vault did not take: try again this soon
FAILED_RETRY = timedelta(minutes=5)  # a lifecycle pass Vault or MTM cut short: look again then
ADMIN_ROLE = "ADMIN"


def rules_of(config_days_every: float, config_days_before: float) -> LifecycleRules:
    """`[api_tokens]` as the plan takes it (0 days: that trigger is off)."""
    return LifecycleRules(
        replace_every=timedelta(days=config_days_every) if config_days_every > 0 else None,
        replace_before_expiry=(
            timedelta(days=config_days_before) if config_days_before > 0 else None
        ),
    )


_PLANNED = {
    Step.NONE: "replace the API token",
    Step.REPLACE: "replace the API token",
    Step.WAIT: "replace the API token",
    Step.PROVE: "prove the API token",
    Step.CLEAR: "clear the replacement record",
    Step.STORE_HELD: "store the new API token",
}


def _changed(expires_at: datetime, source: Source) -> bool:
    recorded = source.api_token_expires_at
    return recorded is None or format_time(recorded) != format_time(expires_at)


class ApiTokens:
    """Keeps the API tokens of one rotator's sources: replaces, promotes, looks up."""

    def __init__(
        self,
        rotator: Rotator,
        mtm: MtmClient,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.rotator = rotator
        self.mtm = mtm
        self._clock = clock
        settings = rotator.config.api_tokens
        self.rules = rules_of(settings.replace_every_days, settings.replace_before_expiry_days)

    @property
    def _store(self) -> VaultStore:
        return self.rotator.store

    def _write_source(self, name: str, data: dict[str, Any], cas: int) -> int:
        """`VaultStore.write_source`; the next pass reads the source again (it moved on)."""
        try:
            return self._store.write_source(name, data, cas=cas)
        finally:
            self.rotator.memory.forget_source(name)

    def _write_source_metadata(self, name: str, custom_metadata: Mapping[str, str]) -> None:
        """`VaultStore.write_source_metadata`; the next pass reads the source again."""
        try:
            self._store.write_source_metadata(name, custom_metadata)
        finally:
            self.rotator.memory.forget_source(name)

    # --- one pass -----------------------------------------------------------------------------

    def step(
        self, name: str, outcome: Outcome | None = None, *, requested: bool = False
    ) -> ApiTokenOutcome:
        """One pass of `name`'s lifecycle, after the rotation that gave `outcome` (None: none
        yet). With `requested` (`rotator replace-api-token`), a replacement is wanted now.
        Never raises for token problems: they become the outcome."""
        memory = self.rotator.memory
        if not is_valid_name(name):
            return ApiTokenOutcome(name, Replacement.NOTHING, Step.NONE, Why.NOTHING)
        with memory.lock(name):
            try:
                return self._step(name, outcome, requested)
            except (VaultError, MtmError) as exc:
                logger.warning("token %s: API-token lifecycle: %s", name, exc)
                held = memory.held_api_token(name) is not None
                return ApiTokenOutcome(
                    name,
                    Replacement.PENDING if held else Replacement.FAILED,
                    Step.NONE,
                    Why.HELD if held else Why.NOTHING,
                    self._clock() + (STORE_RETRY if held else FAILED_RETRY),
                    str(exc),
                    rotation=outcome,
                )

    def _step(self, name: str, outcome: Outcome | None, requested: bool) -> ApiTokenOutcome:
        first, result, error = outcome, Replacement.NOTHING, None
        secret = self.rotator.memory.source(name)
        for _ in range(MAX_STEPS):
            if secret is None:
                secret = self._store.read_source(name)
            source = self._parse(name, secret)
            if source is None:
                return ApiTokenOutcome(name, result, Step.NONE, Why.NOTHING, error=error)
            rotation = outcome if outcome is not first else None
            assert secret is not None
            self._check_next(name, source, outcome)
            facts = self._facts(name, secret, source, outcome, requested)
            plan = plan_api_token(facts, self.rules)
            logger.debug("token %s: API-token lifecycle: %s (%s)", name, plan.step, plan.why)
            if plan.step in (Step.NONE, Step.WAIT, Step.REFUSED):
                if plan.step is Step.REFUSED:
                    result = Replacement.FAILED
                    error = f"{name}: not a LeanIX technical user's token rotator can replace"
                return self._outcome(facts, result, plan, error, rotation)
            if plan.step is Step.STORE_HELD:
                latest = self._store.read_source(name)
                if latest is None:
                    raise VaultError(f"source {name!r} was deleted while being replaced")
                self._store_held(name, latest)
                result = Replacement.REPLACED
                outcome = self.rotator.rotate_one(name)
            elif plan.step is Step.CLEAR:
                self._write_source_metadata(name, cleared_metadata(secret.custom_metadata))
            elif plan.step is Step.PROVE:
                before = facts.api_token
                outcome = self.rotator.rotate_one(name, force=True)
                if self.rotator.memory.proof(name, source.api_token) == before:
                    # No exchange happened (another instance holds the token, Vault or the
                    # IdP is down): look again when the rotation does.
                    return self._outcome(
                        facts, result, replace(plan, at=outcome.next_at), error, outcome
                    )
            elif plan.step is Step.PROMOTE:
                self._promote(name, secret, source)
                result = Replacement.PROMOTED
                outcome = self.rotator.rotate_one(name)
            elif plan.step is Step.REPLACE:
                done, failure = self._replace(name, facts)
                requested = False  # asked for once; the rest of the pass rolls it forward
                if failure is not None:
                    result, error = Replacement.FAILED, failure
                elif not done:  # another instance holds the token, or replaced it since
                    later = self._clock() + self.rotator.rules.claim_lease
                    return self._outcome(facts, result, replace(plan, at=later), error, rotation)
                else:
                    result = Replacement.REPLACED
                    outcome = self.rotator.rotate_one(name)
            secret = None  # every step changed the source: read it again
        raise RuntimeError(f"token {name}: the API-token lifecycle did not settle")

    def _facts(
        self,
        name: str,
        secret: SecretVersion,
        source: Source,
        outcome: Outcome | None,
        requested: bool,
    ) -> ApiTokenFacts:
        memory = self.rotator.memory
        output = outcome.output if outcome is not None else None
        return ApiTokenFacts(
            name,
            self._clock(),
            source,
            secret.custom_metadata,
            created=secret.created,
            api_token=memory.proof(name, source.api_token),
            next_token=(
                memory.proof(name, source.api_token_next) if source.api_token_next else UNPROVEN
            ),
            output_source_version=output.source_version if output is not None else None,
            requested=requested,
            holding=memory.held_api_token(name) is not None,
        )

    def _outcome(
        self,
        facts: ApiTokenFacts,
        result: Replacement,
        plan: LifecyclePlan,
        error: str | None,
        rotation: Outcome | None,
    ) -> ApiTokenOutcome:
        next_token = None
        if facts.source.api_token_next is not None:
            next_token = facts.next_token.verdict
        return ApiTokenOutcome(
            facts.name,
            result,
            plan.step,
            plan.why,
            plan.at,
            error,
            next_token,
            facts.source.api_token_expires_at,
            rotation,
        )

    def pass_over(self, name: str, *, requested: bool = False) -> tuple[Outcome, ApiTokenOutcome]:
        """A token's rotation, then its API-token lifecycle; returns the last rotation's outcome
        (the lifecycle may rotate again, to prove a new API token) and the lifecycle's."""
        outcome = self.rotator.rotate_one(name)
        lifecycle = self.step(name, outcome, requested=requested)
        return lifecycle.rotation or outcome, lifecycle

    # --- the steps ----------------------------------------------------------------------------

    def _replace(self, name: str, facts: ApiTokenFacts) -> tuple[bool, str | None]:
        """Steps 1-3 under this instance's claim. Returns whether this instance replaced the
        token, and what went wrong (None: nothing)."""
        rotator = self.rotator
        now = self._clock()
        claim = take_claim(self._store, name, rotator.instance_id, now, rotator.rules.claim_lease)
        if claim is None:
            logger.info("token %s: another rotator holds the token; replacing later", name)
            return False, None
        try:
            secret = self._store.read_source(name)
            source = self._parse(name, secret)
            if secret is None or source is None:
                return False, f"{name}: the source secret vanished or is malformed"
            fresh = replace(facts, source=source, metadata=secret.custom_metadata, now=now)
            if plan_api_token(fresh, self.rules).step is not Step.REPLACE:
                return False, None  # another instance did it since, or started one
            assert source.mtm_base is not None and source.technical_user_id is not None
            bearer = self._bearer(source)
            recorded = intent_metadata(secret.custom_metadata, now, source.api_token)
            self._write_source_metadata(name, recorded)
            logger.info("token %s: replacing the API token at MTM", name)
            try:
                user = self.mtm.replace_token(
                    source.mtm_base, bearer, source.technical_user_id, name=name
                )
            except MtmError as exc:
                if exc.definite:  # MTM refused: the old token is untouched
                    self._write_source_metadata(name, cleared_metadata(recorded))
                logger.error("token %s: replacing the API token failed: %s", name, exc)
                return False, str(exc)
            assert user.api_token is not None  # the MTM client refuses an answer without one
            SECRETS.register(user.api_token)
            rotator.memory.hold_api_token(
                name, HeldApiToken(user.api_token, user.expires_at, secret.version)
            )
            self._store_held(name, replace(secret, custom_metadata=recorded))
            return True, None
        finally:
            # The output was not written under this claim: 0 has the next claimer read it again.
            release_claim(self._store, name, rotator.instance_id, claim, 0)

    def _store_held(self, name: str, secret: SecretVersion) -> None:
        """Step 3: write the held API token as a new source version over `secret` (or over
        whoever wrote since: their fields kept, the token ours). A Vault that does not take it
        raises; the token stays held and the next pass writes it again."""
        memory = self.rotator.memory
        held = memory.held_api_token(name)
        assert held is not None
        current = secret
        for _ in range(3):
            data = dict(current.data)
            data["api_token"] = held.api_token
            if held.expires_at is not None:
                data["api_token_expires_at"] = format_time(held.expires_at)
            try:
                version = self._write_source(name, data, cas=current.version)
            except VaultConflict:
                latest = self._store.read_source(name)
                if latest is None:
                    raise VaultError(
                        f"source {name!r} was deleted during its replacement"
                    ) from None
                current = latest
                continue
            self._write_source_metadata(
                name, stored_metadata(current.custom_metadata, self._clock())
            )
            memory.drop_api_token(name)
            logger.info("token %s: stored the new API token as source version %d", name, version)
            return
        raise VaultError(f"source {name!r} kept changing during its replacement")

    def _promote(self, name: str, secret: SecretVersion, source: Source) -> None:
        """api_token_next becomes the api_token, in a new source version (check-and-set)."""
        assert source.api_token_next is not None
        data = {k: v for k, v in secret.data.items() if k != "api_token_next"}
        data["api_token"] = source.api_token_next
        version = self._write_source(name, data, cas=secret.version)
        logger.warning(
            "token %s: api_token was rejected; promoted api_token_next (source version %d)",
            name,
            version,
        )

    def _check_next(self, name: str, source: Source, outcome: Outcome | None) -> None:
        """Exchange api_token_next when its last verdict is older than the current token's:
        once per refresh cycle, and whenever the current token was just rejected."""
        if source.api_token_next is None:
            return
        memory = self.rotator.memory
        current = memory.proof(name, source.api_token)
        following = memory.proof(name, source.api_token_next)
        if following.at is not None and (current.at is None or following.at >= current.at):
            return
        staged = replace(source, api_token=source.api_token_next, api_token_next=None)
        now = self._clock()
        try:
            token = self.rotator.exchanger.exchange(staged)
        except ApiTokenRejected:
            memory.prove(name, staged.api_token, Proof(Verdict.REJECTED, now))
            logger.warning("token %s: api_token_next is rejected by the IdP", name)
            return
        except RotatorError as exc:
            logger.info("token %s: api_token_next not checked (%s)", name, exc)
            return
        SECRETS.register_until(token.access_token, token.expires_at)
        memory.prove(name, staged.api_token, Proof(Verdict.WORKS, now))

    # --- helpers ------------------------------------------------------------------------------

    def _bearer(self, source: Source) -> str:
        """The access token of `source`'s admin source, as rotator keeps it fresh."""
        admin = self._source(source.admin)
        if admin is None:
            raise MtmRefused(f"{source.name}: admin source {source.admin!r} is missing", 401)
        return self._admin_token(admin, exchange=False).access_token

    def _admin_token(self, admin: Source, exchange: bool) -> AccessToken:
        """`admin`'s access token: held in memory or stored in its output while valid; with
        `exchange`, else a new one from the IdP (not stored)."""
        now = self._clock()
        token = self.rotator.memory.held(admin.name, now)
        if token is None:
            token = self.rotator.read_output(admin.name).trusted
        if token is not None and token.expires_at > now:
            return token
        if not exchange:
            raise MtmRefused(f"no valid access token for admin source {admin.name!r}", 401)
        token = self.rotator.exchanger.exchange(admin)
        SECRETS.register_until(token.access_token, token.expires_at)
        return token

    def _parse(self, name: str, secret: SecretVersion | None) -> Source | None:
        if secret is None:
            return None
        parsed = self.rotator.parse(name, secret)
        return None if isinstance(parsed, SourceError) else parsed

    def planned(self, name: str) -> list[Planned]:
        """What the lifecycle will do with `name`'s API token, from what Vault holds (read-only,
        for `rotator plan`: no exchange, so a rejected api_token is not known here)."""
        if not is_valid_name(name):
            return []
        secret = self._store.read_source(name)
        source = self._parse(name, secret)
        if secret is None or source is None:
            return []
        facts = ApiTokenFacts(
            name, self._clock(), source, secret.custom_metadata, created=secret.created
        )
        plan = plan_api_token(facts, self.rules)
        found: list[Planned] = []
        action = _PLANNED.get(plan.step)
        if action is not None and (plan.step is not Step.NONE or plan.at is not None):
            found.append(Planned(name, action, plan.at or facts.now, WHY_TEXT[plan.why]))
        if source.api_token_next is not None:
            found.append(Planned(name, "promote api_token_next", None, "if api_token is rejected"))
        return found

    # --- looking technical users up ------------------------------------------------------------

    def survey(self, names: list[str], *, exchange: bool = False) -> Inventory:
        """Every technical user of every workspace reachable through an admin source, against
        the sources among `names` that name one (`inventory.compare`): one paged listing per
        workspace (`GET /technicalusers`). With `exchange`, an admin source without a valid
        access token in Vault is exchanged for one (`rotator inventory` without a daemon)."""
        managed: list[ManagedSource] = []
        parsed: dict[str, Source] = {}
        for name in names:
            source = self._source(name)
            if source is None:
                continue
            parsed[name] = source
            if source.technical_user_id is not None and source.mtm_base is not None:
                managed.append(ManagedSource(name, source.technical_user_id, source.admin))
        workspaces = [
            self._workspace(admin, parsed.get(admin) or self._source(admin), exchange)
            for admin in sorted({source.admin for source in managed})
        ]
        return compare(workspaces, managed)

    def record_expiries(self, inventory: Inventory) -> None:
        """Keep each managed source's `api_token_expires_at` as MTM has it: a new source version
        where it changed (never during a replacement: MTM's expiry is then the new token's,
        which the replacement writes beside that token)."""
        for entry in inventory.of(Standing.MANAGED):
            if entry.source is None or entry.expires_at is None:
                continue
            with self.rotator.memory.lock(entry.source):
                secret = self._store.read_source(entry.source)
                source = self._parse(entry.source, secret)
                if secret is None or source is None or read_intent(secret.custom_metadata):
                    continue
                if _changed(entry.expires_at, source):
                    self._record_expiry(entry.source, secret, entry.expires_at)

    def _workspace(self, admin: str, source: Source | None, exchange: bool) -> Workspace:
        """The technical users `admin`'s access token can list, or why they cannot be."""
        if source is None or source.mtm_base is None:
            why = "missing or malformed" if source is None else "not a LeanIX MTM token URL"
            return Workspace(admin, None, admin, error=f"admin source {admin!r}: {why}")
        try:
            token = self._admin_token(source, exchange)
            users = self.mtm.technical_users(source.mtm_base, token.access_token, name=admin)
        except (RotatorError, VaultError) as exc:
            logger.warning("technical users through admin source %s: %s", admin, exc)
            return Workspace(admin, None, admin, error=str(exc))
        principal = token.principal
        return Workspace(
            principal.workspace_id or admin, principal.workspace_name, admin, tuple(users)
        )

    def _source(self, name: str) -> Source | None:
        if not is_valid_name(name):
            return None
        return self._parse(name, self.rotator.memory.source(name) or self._store.read_source(name))

    def _record_expiry(self, name: str, secret: SecretVersion, expires_at: datetime) -> None:
        """Write MTM's expiry into the source (a new version, check-and-set); a source rotator
        may not write keeps its old value, and the expiry alerts use MTM's all the same."""
        data = {**secret.data, "api_token_expires_at": format_time(expires_at)}
        try:
            version = self._write_source(name, data, cas=secret.version)
        except VaultConflict:
            return  # someone wrote it since: the next lookup compares again
        except VaultError as exc:
            logger.warning("token %s: cannot record the API token's expiry: %s", name, exc)
            return
        logger.info(
            "token %s: API token expires at %s (MTM); source version %d",
            name,
            format_time(expires_at),
            version,
        )

    # --- proving a replacement would be allowed ---------------------------------------------------

    def dry_run(self, name: str) -> list[Check]:
        """Prove each step of a replacement would be allowed, changing nothing: the admin
        source's exchange works, MTM answers `GET /technicalusers/{id}` with its access token,
        its role may replace, and Vault grants rotator `update` on the source."""
        checks: list[Check] = []
        if not is_valid_name(name):
            return [Check("source", False, f"{name!r} is not a usable token name")]
        secret = self._store.read_source(name)
        source = self._parse(name, secret)
        if source is None:
            return [Check("source", False, f"{name}: no such source, or it is malformed")]
        if source.technical_user_id is None or source.mtm_base is None:
            reason = "no technical_user_id" if source.mtm_base else "not a LeanIX MTM token URL"
            return [Check("managed", False, f"{name}: {reason}")]
        checks.append(Check("managed", True, f"technical user {source.technical_user_id}"))
        admin_secret = self._store.read_source(source.admin)
        admin = self._parse(source.admin, admin_secret)
        if admin is None:
            return [*checks, Check("admin source", False, f"{source.admin}: missing/malformed")]
        try:
            token = self.rotator.exchanger.exchange(admin)
        except RotatorError as exc:
            return [*checks, Check("admin exchange", False, str(exc))]
        SECRETS.register_until(token.access_token, token.expires_at)
        checks.append(Check("admin exchange", True, f"admin source {admin.name!r}"))
        try:
            user: TechnicalUser = self.mtm.technical_user(
                source.mtm_base, token.access_token, source.technical_user_id, name=name
            )
        except MtmError as exc:
            checks.append(Check("technical user at MTM", False, str(exc)))
        else:
            checks.append(Check("technical user at MTM", True, f"user {user.user_name!r}"))
        role = token.principal.role
        checks.append(
            Check("admin role may replace", role == ADMIN_ROLE, f"role {role or 'unknown'}")
        )
        writable = self._store.can_update_source(name)
        checks.append(
            Check(
                "Vault grants update on the source",
                writable,
                "" if writable else "add deploy/vault/rotator-lifecycle-policy.hcl",
            )
        )
        return checks
