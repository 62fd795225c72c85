"""Login throttling: what a password guesser gets is a few slow checks, then waits.

Each attempt is counted before its password is checked (a burst of concurrent guesses is
counted as it arrives, not after the slow hash), against the client's address and
against the account. One login per address is checked at a time, and only a bounded
number wait at all: the rest are refused at once, so a flood cannot queue up argon2 work
in front of a real user. A success clears the failures of that address and account pair
only: a guesser who owns one account cannot wipe their record by logging into it.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

KEEP_EXTRA = 32  # failures remembered per key beyond the limit


class LoginThrottle:
    """Failures per key (an address, or an account) in a sliding window, each tagged with
    the other half of the pair so a success can take back exactly its own.

    Memory is bounded: at most `max_clients` keys are tracked, the least recent dropped.
    """

    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self.max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, deque[tuple[float, str]]] = OrderedDict()

    def retry_after(self, key: str) -> float:
        """Seconds the client must wait before trying again; 0 when it may try now."""
        failures = self._recent(key)
        if len(failures) < self.max_failures:
            return 0.0
        return max(0.0, failures[-self.max_failures][0] + self.window - self._clock())

    def failed(self, key: str, other: str = "") -> None:
        failures = self._recent(key)
        failures.append((self._clock(), other))
        # Kept beyond the limit, so that forgiving one pair leaves the others' counted.
        while len(failures) > self.max_failures + KEEP_EXTRA:
            failures.popleft()
        self._failures[key] = failures
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def forgive(self, key: str, other: str = "") -> None:
        """Drop `key`'s failures that were paired with `other`."""
        failures = self._failures.get(key)
        if failures is None:
            return
        kept = deque(entry for entry in failures if entry[1] != other)
        if kept:
            self._failures[key] = kept
        else:
            del self._failures[key]

    def _recent(self, key: str) -> deque[tuple[float, str]]:
        failures = self._failures.get(key, deque())
        horizon = self._clock() - self.window
        while failures and failures[0][0] <= horizon:
            failures.popleft()
        return failures


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a login is not checked now: the status to answer and when to come back."""

    status: int  # 429: this client or account must wait; 503: the server is busy
    detail: str
    retry_after: float


class LoginGate:
    """Admits a login for checking, or says why not (see the module doc)."""

    def __init__(
        self,
        *,
        max_failures: int,
        account_max_failures: int,
        window_seconds: float,
        queue_size: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.by_address = LoginThrottle(max_failures, window_seconds, clock=clock)
        self.by_account = LoginThrottle(account_max_failures, window_seconds, clock=clock)
        self.queue_size = queue_size
        self._in_flight: set[str] = set()
        self.checks_total = 0
        self.refused_total = 0

    def refusal(self, address: str, account: str) -> Refusal | None:
        if address in self._in_flight:
            return Refusal(429, "a login from this address is already being checked", 1.0)
        wait = self.by_address.retry_after(address)
        if wait > 0:
            return Refusal(429, "too many failed logins; try again later", wait)
        wait = self.by_account.retry_after(account)
        if wait > 0:
            return Refusal(429, "too many failed logins for this account; try again later", wait)
        if len(self._in_flight) >= self.queue_size:
            return Refusal(503, "too many logins in progress; try again shortly", 1.0)
        return None

    @contextmanager
    def checking(self, address: str, account: str) -> Iterator[Attempt]:
        """Hold the address's one slot while its password is checked. The attempt counts
        as a failure from the start; `attempt.succeeded()` takes it (and the pair's
        earlier failures) back."""
        self._in_flight.add(address)
        self.by_address.failed(address, account)
        self.by_account.failed(account, address)
        self.checks_total += 1
        try:
            yield Attempt(self, address, account)
        finally:
            self._in_flight.discard(address)


class Attempt:
    def __init__(self, gate: LoginGate, address: str, account: str) -> None:
        self._gate, self._address, self._account = gate, address, account

    def succeeded(self) -> None:
        self._gate.by_address.forgive(self._address, self._account)
        self._gate.by_account.forgive(self._account, self._address)


class LoginCollector(Collector):
    """perfpulse_login_* metrics."""

    def __init__(self, gate: LoginGate) -> None:
        self._gate = gate

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "perfpulse_login_password_checks_total",
            "Logins whose password was checked (each one counted before its check).",
            value=self._gate.checks_total,
        )
        yield CounterMetricFamily(
            "perfpulse_login_refused_total",
            "Logins refused without a check: throttled, already in progress, or queue full.",
            value=self._gate.refused_total,
        )
