"""Redaction by construction: rotator.redact's registry and logging filter."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from rotator.redact import (
    EXPIRY_GRACE,
    MAX_EXPIRING,
    SECRETS,
    RedactingFilter,
    SecretRegistry,
    fingerprint,
    install_filter,
)

SECRET = "lx-api-token-0123456789abcdef"
OTHER = "another-secret-value-42"
PLACEHOLDER = re.compile(r"\[REDACTED:[0-9a-f]{12}\]")


def registry(*values: object) -> SecretRegistry:
    secrets = SecretRegistry()
    secrets.register(*values)
    return secrets


def test_every_occurrence_of_a_registered_secret_is_replaced_by_its_placeholder() -> None:
    text = registry(SECRET).redact(f"token {SECRET} and again {SECRET}.")

    mark = f"[REDACTED:{fingerprint(SECRET)}]"
    assert text == f"token {mark} and again {mark}."


def test_the_placeholder_is_twelve_hex_digits_of_the_secrets_fingerprint() -> None:
    text = registry(SECRET).redact(SECRET)

    assert PLACEHOLDER.fullmatch(text)
    assert text == f"[REDACTED:{fingerprint(SECRET)}]"


def test_two_secrets_get_different_placeholders() -> None:
    text = registry(SECRET, OTHER).redact(f"{SECRET} {OTHER}")

    first, second = text.split(" ")
    assert PLACEHOLDER.fullmatch(first)
    assert PLACEHOLDER.fullmatch(second)
    assert first != second


def test_text_without_secrets_is_unchanged() -> None:
    assert registry(SECRET).redact("nothing to see here") == "nothing to see here"


def test_values_shorter_than_eight_characters_are_not_registered() -> None:
    secrets = registry("1234567", "")

    assert secrets.redact("code 1234567 here") == "code 1234567 here"


def test_a_value_of_exactly_eight_characters_is_registered() -> None:
    assert registry("12345678").redact("code 12345678 here") == (
        f"code [REDACTED:{fingerprint('12345678')}] here"
    )


def test_non_string_values_are_ignored() -> None:
    secrets = registry(123456789012, None, b"bytes-secret-value", ["list-secret-value"])

    assert secrets.redact("123456789012 bytes-secret-value list-secret-value") == (
        "123456789012 bytes-secret-value list-secret-value"
    )


def test_a_secret_containing_another_is_replaced_whole() -> None:
    inner = "abcdefgh"
    outer = f"xx-{inner}-yy-long"
    # registration order must not matter: the longer secret wins either way
    for secrets in (registry(inner, outer), registry(outer, inner)):
        text = secrets.redact(f"value {outer}")

        assert text == f"value [REDACTED:{fingerprint(outer)}]"


def test_redact_data_walks_dicts_and_lists() -> None:
    secrets = registry(SECRET)
    data = {
        "message": f"got {SECRET}",
        "nested": {"list": ["plain", SECRET, {"deep": SECRET}], "count": 3, "flag": None},
        SECRET: "key",
    }

    redacted = secrets.redact_data(data)

    mark = f"[REDACTED:{fingerprint(SECRET)}]"
    assert redacted == {
        "message": f"got {mark}",
        "nested": {"list": ["plain", mark, {"deep": mark}], "count": 3, "flag": None},
        mark: "key",
    }
    assert data["message"] == f"got {SECRET}", "the original is left alone"


def test_redact_data_walks_tuples() -> None:
    assert registry(SECRET).redact_data((SECRET, 1)) == [f"[REDACTED:{fingerprint(SECRET)}]", 1]


# --- the logging filter ---------------------------------------------------------------------------


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, io.StringIO, SecretRegistry]]:
    """A logger writing through a real StreamHandler carrying a RedactingFilter of its own."""
    secrets = registry(SECRET)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    logger = logging.getLogger("tests.unit.test_redact")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream, secrets
    logger.removeHandler(handler)
    logger.propagate = True
    handler.close()


def test_the_filter_redacts_percent_arguments(
    log: tuple[logging.Logger, io.StringIO, SecretRegistry],
) -> None:
    logger, stream, _ = log

    logger.info("exchanged %s for %s", "acme", SECRET)

    assert stream.getvalue() == f"INFO exchanged acme for [REDACTED:{fingerprint(SECRET)}]\n"


def test_the_filter_redacts_the_message_itself(
    log: tuple[logging.Logger, io.StringIO, SecretRegistry],
) -> None:
    logger, stream, _ = log

    logger.warning(f"token {SECRET} rejected")  # noqa: G004 - the mistake the filter guards against

    assert SECRET not in stream.getvalue()
    assert "[REDACTED:" in stream.getvalue()


def test_the_filter_leaves_messages_without_secrets_and_their_arguments_alone(
    log: tuple[logging.Logger, io.StringIO, SecretRegistry],
) -> None:
    logger, stream, _ = log

    logger.info("%d tokens, %s", 3, "all healthy")

    assert stream.getvalue() == "INFO 3 tokens, all healthy\n"


def test_the_filter_redacts_exception_text(
    log: tuple[logging.Logger, io.StringIO, SecretRegistry],
) -> None:
    logger, stream, _ = log

    try:
        raise ValueError(f"bad token {SECRET}")
    except ValueError:
        logger.exception("exchange failed")

    output = stream.getvalue()
    assert SECRET not in output
    assert f"ValueError: bad token [REDACTED:{fingerprint(SECRET)}]" in output
    assert "Traceback (most recent call last)" in output


def test_the_filter_redacts_exception_text_passed_as_exc_info(
    log: tuple[logging.Logger, io.StringIO, SecretRegistry],
) -> None:
    logger, stream, _ = log
    error = RuntimeError(f"refused {SECRET}")

    logger.error("vault said no", exc_info=error)

    assert SECRET not in stream.getvalue()
    assert "RuntimeError: refused [REDACTED:" in stream.getvalue()


def test_a_secret_registered_after_the_filter_was_installed_is_redacted(
    log: tuple[logging.Logger, io.StringIO, SecretRegistry],
) -> None:
    logger, stream, secrets = log
    secrets.register(OTHER)

    logger.info("new %s", OTHER)

    assert stream.getvalue() == f"INFO new [REDACTED:{fingerprint(OTHER)}]\n"


def test_install_filter_uses_the_global_registry_by_default() -> None:
    secret = "install-filter-default-registry-secret"
    SECRETS.register(secret)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    install_filter(handler)
    logger = logging.getLogger("tests.unit.test_redact.install")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info("value %s", secret)
    finally:
        logger.removeHandler(handler)
        handler.close()

    assert stream.getvalue() == f"value [REDACTED:{fingerprint(secret)}]\n"


# --- what the registry keeps, and for how long ----------------------------------------------------

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_a_secret_registered_for_good_outlives_any_number_of_expiring_ones() -> None:
    """The Vault token, the secret-id, webhook URLs and the DSN are registered once, at start;
    a fleet's access tokens must never push them out."""
    clock = Clock()
    secrets = SecretRegistry(clock=clock)
    secrets.register("https://hooks.example.com/services/T0/B0/long-lived")
    for number in range(200_000):
        secrets.register_until(f"{number:08d}-access-token", NOW + timedelta(hours=1))

    assert "long-lived" not in secrets.redact(
        "posting to https://hooks.example.com/services/T0/B0/long-lived"
    )


def test_expiring_secrets_are_bounded_the_soonest_to_expire_going_first() -> None:
    secrets = SecretRegistry(clock=Clock())
    for number in range(MAX_EXPIRING + 10):
        secrets.register_until(f"{number:08d}-access-token", NOW + timedelta(seconds=number))

    assert secrets.redact("00000000-access-token") == "00000000-access-token"  # the first to go
    assert "access-token" not in secrets.redact(f"{MAX_EXPIRING + 9:08d}-access-token")
    assert secrets.expiring_count() == MAX_EXPIRING


def test_an_expiring_secret_is_kept_until_a_grace_period_after_it_expires() -> None:
    clock = Clock()
    secrets = SecretRegistry(clock=clock)
    secrets.register_until("access-token-one", NOW + timedelta(hours=1))

    clock.now = NOW + timedelta(hours=1) + EXPIRY_GRACE - timedelta(seconds=1)
    secrets.register_until("access-token-two", clock.now + timedelta(hours=1))  # purges lazily
    kept = secrets.redact("access-token-one")
    clock.now = NOW + timedelta(hours=1) + EXPIRY_GRACE + timedelta(seconds=1)
    secrets.register_until("access-token-three", clock.now + timedelta(hours=1))

    assert kept != "access-token-one"
    assert secrets.redact("access-token-one") == "access-token-one"
    assert secrets.redact("access-token-two") != "access-token-two"


def test_a_secret_that_expired_long_ago_is_still_kept_for_the_grace_period() -> None:
    """An output read after a long outage holds a token that expired long ago: log lines about
    it come now, so it is kept from now on."""
    clock = Clock()
    secrets = SecretRegistry(clock=clock)
    secrets.register_until("access-token-old", NOW - timedelta(days=3))
    clock.now = NOW + EXPIRY_GRACE - timedelta(seconds=1)
    secrets.register_until("access-token-new", NOW + timedelta(hours=1))

    assert secrets.redact("access-token-old") != "access-token-old"


def test_registering_for_good_wins_over_an_expiry() -> None:
    clock = Clock()
    secrets = SecretRegistry(clock=clock)
    secrets.register_until("api-token-value", NOW)
    secrets.register("api-token-value")
    clock.now = NOW + timedelta(days=30)
    secrets.register_until("access-token-new", clock.now + timedelta(hours=1))

    assert secrets.redact("api-token-value") != "api-token-value"
    assert secrets.expiring_count() == 1


def test_a_later_expiry_extends_an_expiring_secret() -> None:
    clock = Clock()
    secrets = SecretRegistry(clock=clock)
    secrets.register_until("access-token-one", NOW)
    secrets.register_until("access-token-one", NOW + timedelta(days=1))
    clock.now = NOW + timedelta(hours=12)
    secrets.register_until("access-token-two", clock.now)

    assert secrets.redact("access-token-one") != "access-token-one"
