"""The SDK settings derived from a storage's or a key's ``timeout`` keep every call within it."""

import pytest

from sealdump.keys.azure_key_vault import VaultDeadline
from sealdump.storage.azure_blob import RetryPlan


@pytest.mark.parametrize("timeout", [5, 7.5, 10, 20, 30, 60, 108, 120, 300, 600, 3600])
def test_storage_plan_fits_the_timeout_with_every_retry_and_backoff(timeout: float) -> None:
    plan = RetryPlan.plan(timeout)
    assert plan.bound <= timeout
    assert plan.request_bound < plan.bound
    assert 0 <= plan.retries <= 3
    assert 0 < plan.socket <= 60
    options = plan.client_options()
    assert options["connection_timeout"] == options["read_timeout"] == plan.socket
    assert options["retry_total"] == plan.retries


def test_default_storage_plan() -> None:
    plan = RetryPlan.plan(120)
    assert (plan.socket, plan.retries) == (20, 3)
    # 4 attempts of 20 s, back-offs of at most 3, 5 and 9 s; a download's body re-read on top.
    assert plan.request_bound == 4 * 20 + 3 + 5 + 9 == 97
    assert plan.bound == 20 + 1 + 97 == 118


def test_short_storage_timeouts_trade_retries_for_socket_time() -> None:
    assert RetryPlan.plan(20).retries == 1
    assert RetryPlan.plan(30).retries == 2
    assert RetryPlan.plan(5).retries == 0


@pytest.mark.parametrize("timeout", [5, 10, 60, 180, 600])
def test_vault_deadline_is_the_timeout(timeout: float) -> None:
    deadline = VaultDeadline(timeout)
    assert deadline.bound == pytest.approx(timeout)
    assert deadline.budget > 0
    options = deadline.client_options()
    assert options["connection_timeout"] == options["read_timeout"] == deadline.socket
    assert options["retry_policy"].timeout == deadline.budget


def test_default_vault_deadline() -> None:
    deadline = VaultDeadline(60)
    assert (deadline.socket, deadline.budget) == (10, 40)
