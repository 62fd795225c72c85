"""Login throttling: what a password guesser gets is a few slow checks, then waits.

Each attempt is counted before its password is checked (a burst of concurrent guesses is
counted as it arrives, not after the slow hash), against the client's address and
against the account. One login per address is checked at a time, and only a bounded
number wait at all: the rest are refused at once, so a flood cannot queue up argon2 work
in front of a real user. A success clears the failures of that address and account pair
only: a guesser who owns one account cannot wipe their record by logging into it.

An address past its own limit waits. An account past its limit (guesses from many
addresses) is not locked: that would let anyone lock out anyone whose name they can
guess. Its logins are checked one at a time instead, each after a delay that grows with
the failures (0.5 s doubling every 8 more, at most 8 s), and an address that has failed
for it 3 times itself waits like an address past its own limit. A guesser with many
addresses gets about one check per delay against that account; its owner, from an
address that has not failed, gets in after at most a few delays.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

KEEP_EXTRA = 32  # failures remembered per key beyond the limit
# An account past its limit: the delay before each check, and who still gets one.
ACCOUNT_DELAY_BASE = 0.5
ACCOUNT_DELAY_DOUBLING = 8  # failures past the limit per doubling
ACCOUNT_DELAY_MAX = 8.0
ACCOUNT_OWN_FAILURES = 3  # failures for the account from one address before it waits
ACCOUNT_WAITING = 2  # delayed logins queued per account; more are told to come back


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

    def excess(self, key: str) -> int:
        """Failures in the window beyond the limit (negative: that many short of it)."""
        return len(self._recent(key)) - self.max_failures

    def paired(self, key: str, other: str) -> int:
        """Failures of `key` in the window tagged with `other`."""
        return sum(1 for _, tag in self._recent(key) if tag == other)

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
        self._turns: dict[str, asyncio.Lock] = {}  # accounts past their limit
        self._waiting: dict[str, int] = {}
        self.checks_total = 0
        self.refused_total = 0
        self.delayed_total = 0

    def account_delay(self, account: str) -> float:
        """Seconds a check for `account` waits first: 0 until it is past its limit."""
        excess = self.by_account.excess(account)
        if excess < 0:
            return 0.0
        return min(ACCOUNT_DELAY_MAX, ACCOUNT_DELAY_BASE * 2 ** (excess / ACCOUNT_DELAY_DOUBLING))

    def refusal(self, address: str, account: str) -> Refusal | None:
        if address in self._in_flight:
            return Refusal(429, "a login from this address is already being checked", 1.0)
        wait = self.by_address.retry_after(address)
        if wait > 0:
            return Refusal(429, "too many failed logins; try again later", wait)
        delay = self.account_delay(account)
        if delay > 0:
            if self.by_account.paired(account, address) >= ACCOUNT_OWN_FAILURES:
                wait = self.by_account.retry_after(account)
                return Refusal(
                    429, "too many failed logins for this account; try again later", wait
                )
            if self._waiting.get(account, 0) >= ACCOUNT_WAITING:
                return Refusal(
                    429,
                    "many failed logins for this account: they are checked one at a time; "
                    "try again shortly",
                    delay,
                )
            # Delayed logins have a queue of their own: they never fill the one below.
            if sum(self._waiting.values()) >= self.queue_size:
                return Refusal(503, "too many logins in progress; try again shortly", delay)
            return None
        if len(self._in_flight) - sum(self._waiting.values()) >= self.queue_size:
            return Refusal(503, "too many logins in progress; try again shortly", 1.0)
        return None

    @contextmanager
    def checking(self, address: str, account: str) -> Iterator[Attempt]:
        """Hold the address's one slot while its password is checked. The attempt counts
        as a failure from the start; `attempt.succeeded()` takes it (and the pair's
        earlier failures) back. `await attempt.turn()` before the check waits for the
        account's turn and delay when it is past its limit."""
        delay = self.account_delay(account)
        self._in_flight.add(address)
        self.by_address.failed(address, account)
        self.by_account.failed(account, address)
        self.checks_total += 1
        attempt = Attempt(self, address, account, delay)
        if delay > 0:
            self._waiting[account] = self._waiting.get(account, 0) + 1
            self.delayed_total += 1
        try:
            yield attempt
        finally:
            self._in_flight.discard(address)
            attempt.release()
            if delay > 0:
                self._waiting[account] -= 1
                if not self._waiting[account]:
                    del self._waiting[account]
                    self._turns.pop(account, None)

    def _turn(self, account: str) -> asyncio.Lock:
        return self._turns.setdefault(account, asyncio.Lock())


class Attempt:
    def __init__(self, gate: LoginGate, address: str, account: str, delay: float = 0) -> None:
        self._gate, self._address, self._account = gate, address, account
        self.delay = delay
        self._held: asyncio.Lock | None = None

    async def turn(self) -> None:
        """For an account past its limit: wait for the checks before this one, then the
        delay (the check follows while the turn is held)."""
        if self.delay <= 0:
            return
        lock = self._gate._turn(self._account)
        await lock.acquire()
        self._held = lock
        await asyncio.sleep(self.delay)

    def release(self) -> None:
        if self._held is not None:
            self._held.release()
            self._held = None

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
            "perfpulse_login_delayed_total",
            "Logins checked after a delay because their account is past its failure limit.",
            value=self._gate.delayed_total,
        )
        yield CounterMetricFamily(
            "perfpulse_login_refused_total",
            "Logins refused without a check: throttled, already in progress, or queue full.",
            value=self._gate.refused_total,
        )
