"""The hard dollar budget (and the request / token caps), durable across crashes.

Accounting, in memory, for one session (one ``generate`` call):

- before a request is sent, :meth:`Budget.reserve` takes its worst-case cost (prompt tokens x input price +
  max_tokens x output price); it fits only if ``prior + spent + reserved + cost <= budget_usd``;
- the answer settles it with the billed usage (:meth:`settle`); an error answer (4xx/5xx, never billed)
  releases it (:meth:`release`); a request whose outcome is unknown (timed out after sending, connection
  dropped mid-answer) stays charged at its reservation (:meth:`charge_unknown`);
- when the next reservation does not fit *now* but would once the requests in flight settle (they usually
  cost less than their worst case), ``reserve`` awaits them; when it cannot fit even with nothing in
  flight, dispatch stops for good (``exhausted = "budget"``). The same holds for ``max_total_tokens``
  (reserve prompt + max_tokens tokens) and ``max_requests`` (records sent, retries not counted). The two caps
  are per session; the dollar budget belongs to the run directory.

Durability: ledger.jsonl in the run directory. Money is *leased* in blocks (``max(1% of the budget,
8 requests' worth)``) with a line written and fsynced *before* any reservation draws on it, so
``prior + spent + reserved <= leased <= budget`` at every instant. A clean end writes a ``close`` line with
what the session really spent (settled + unknown), returning the unused lease. On resume a closed session
counts its ``spent_usd``, a session with no ``close`` (kill -9, power loss) counts *everything it leased*:
in-flight outcomes at the crash are unknowable, so they are charged conservatively, at the price of at most
one lease block per crash. The total can therefore never exceed the budget across any number of crashes.
Lines::

    {"event": "open",  "session": S, "time": ISO, "budget_usd": B}
    {"event": "lease", "session": S, "usd": X, "leased_usd": cumulative leased in S}
    {"event": "close", "session": S, "time": ISO, "spent_usd": Y, "unknown_usd": U}

As a floor, prior spend is never less than the cost recorded in traces.jsonl (covers unbudgeted sessions).
"""

from __future__ import annotations

import asyncio
import math
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import RunDirError
from ..rundir import open_append, open_read, truncate_durably
from ._json import dumps, loads

__all__ = ["Budget", "Ledger", "Reservation"]


def utc_now_iso() -> str:
    """Current UTC time, ISO 8601, seconds precision."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class Reservation:
    """What one attempt holds until it settles: worst-case dollars and tokens."""

    usd: float
    tokens: int


class Ledger:
    """Append-only, fsynced ledger.jsonl (one JSON object a line; a torn last line is dropped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def read(self) -> list[dict[str, Any]]:
        """All complete lines; a torn last line (crash mid-write) is truncated away."""
        try:
            with open_read(self.path) as f:
                data = f.read()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise RunDirError(f"{self.path}: cannot read the budget ledger ({e.strerror})") from None
        end = data.rfind(b"\n") + 1
        if end < len(data):
            _truncate(self.path, end)
            data = data[:end]
        entries: list[dict[str, Any]] = []
        for lineno, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append(loads(line))
            except ValueError:
                raise RunDirError(
                    f"{self.path}:{lineno}: corrupt budget ledger line; the spend of this run directory "
                    "is unknown: use a new --output-dir"
                ) from None
        return entries

    def append(self, entry: dict[str, Any]) -> None:
        """Write one line and fsync it before returning."""
        try:
            if self._fd is None:
                self._fd = open_append(self.path)
            line = dumps(entry) + b"\n"
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(28, "short write")
            os.fsync(self._fd)
        except OSError as e:
            raise RunDirError(
                f"{self.path}: cannot write the budget ledger ({e.strerror or e}); "
                "free disk space or choose another --output-dir, then rerun the same command"
            ) from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _truncate(path: Path, size: int) -> None:
    try:
        truncate_durably(path, size)
    except OSError as e:
        raise RunDirError(f"{path}: cannot repair a torn last line ({e.strerror})") from None


def _usd(value: Any) -> float | None:
    """A ledger amount: a finite number >= 0, else None (a corrupt or hostile figure is never trusted)."""
    try:
        usd = float(value)
    except (TypeError, ValueError):
        return None
    return usd if math.isfinite(usd) and usd >= 0 else None


def prior_spend_usd(entries: list[dict[str, Any]]) -> float:
    """What earlier sessions spent: close.spent_usd when closed, everything leased when not.

    The ledger never goes down: a close line whose ``spent_usd`` is not a finite number >= 0 is ignored (the
    session then counts everything it leased).
    """
    leased: dict[str, float] = {}
    closed: dict[str, float] = {}
    for e in entries:
        session = str(e.get("session", ""))
        event = e.get("event")
        if event == "lease":
            usd = _usd(e.get("leased_usd", 0.0))
            if usd is not None:
                leased[session] = max(leased.get(session, 0.0), usd)
        elif event == "close":
            usd = _usd(e.get("spent_usd", 0.0))
            if usd is not None:
                closed[session] = usd
        elif event == "open":
            leased.setdefault(session, 0.0)
    return sum(closed.get(s, leased.get(s, 0.0)) for s in set(leased) | set(closed))


class Budget:
    """Reservations against the dollar budget and the request/token caps; see the module docstring."""

    LEASE_FRACTION = 0.01
    LEASE_MIN_REQUESTS = 8

    def __init__(
        self,
        *,
        budget_usd: float | None,
        max_requests: int | None = None,
        max_total_tokens: int | None = None,
        ledger: Ledger | None = None,
        prior_spent_usd: float = 0.0,
    ) -> None:
        self.budget_usd = budget_usd
        self.max_requests = max_requests
        self.max_total_tokens = max_total_tokens
        self.prior_spent_usd = prior_spent_usd
        self.session = uuid.uuid4().hex
        self._ledger = ledger
        self.spent_usd = 0.0
        """Settled (billed) dollars this session, unknown charges included."""
        self.unknown_usd = 0.0
        """Dollars charged at reservation for requests whose outcome is unknown."""
        self.reserved_usd = 0.0
        self.leased_usd = 0.0
        self.spent_tokens = 0
        self.reserved_tokens = 0
        self.requests = 0
        """Records dispatched this session (first attempts)."""
        self.exhausted: str | None = None
        """Why dispatch stopped for good: "budget" | "max_requests" | "max_total_tokens", else None."""
        self._waiters: list[asyncio.Future[None]] = []
        if ledger is not None:
            ledger.append(
                {"event": "open", "session": self.session, "time": utc_now_iso(), "budget_usd": budget_usd}
            )

    @classmethod
    def open(
        cls,
        ledger_path: Path,
        *,
        budget_usd: float | None,
        max_requests: int | None = None,
        max_total_tokens: int | None = None,
        trace_cost_usd: float = 0.0,
    ) -> Budget:
        """Continue the run directory's ledger: prior spend from earlier sessions, then a new session."""
        ledger = Ledger(ledger_path)
        prior = max(prior_spend_usd(ledger.read()), trace_cost_usd)
        return cls(
            budget_usd=budget_usd,
            max_requests=max_requests,
            max_total_tokens=max_total_tokens,
            ledger=ledger,
            prior_spent_usd=prior,
        )

    # ---- views ----------------------------------------------------------------------------------------
    @property
    def total_spent_usd(self) -> float:
        """Spent by the run directory: earlier sessions + this one."""
        return self.prior_spent_usd + self.spent_usd

    @property
    def committed_usd(self) -> float:
        """Spent + reserved by requests in flight: the most the run directory can have been billed."""
        return self.prior_spent_usd + self.spent_usd + self.reserved_usd

    # ---- reserving -------------------------------------------------------------------------------------
    def try_reserve(self, usd: float, tokens: int, *, new_request: bool = True) -> Reservation | None:
        """Reserve now if it fits; None if it does not (``exhausted`` is set when it never will)."""
        if self.exhausted is not None and (new_request or self.exhausted != "max_requests"):
            return None
        if new_request and self.max_requests is not None and self.requests >= self.max_requests:
            self.exhausted = "max_requests"
            return None
        if self.max_total_tokens is not None:
            if self.spent_tokens + tokens > self.max_total_tokens:
                self.exhausted = "max_total_tokens"
                return None
            if self.spent_tokens + self.reserved_tokens + tokens > self.max_total_tokens:
                return None
        if self.budget_usd is not None:
            if self.prior_spent_usd + self.spent_usd + usd > self.budget_usd:
                self.exhausted = "budget"
                return None
            if self.committed_usd + usd > self.budget_usd:
                return None
            self._lease_for(usd)
        self.reserved_usd += usd
        self.reserved_tokens += tokens
        if new_request:
            self.requests += 1
        return Reservation(usd, tokens)

    async def reserve(self, usd: float, tokens: int, *, new_request: bool = True) -> Reservation | None:
        """Reserve, awaiting requests in flight when they may free room; None once exhausted."""
        while True:
            res = self.try_reserve(usd, tokens, new_request=new_request)
            if res is not None:
                return res
            if self.exhausted is not None and (new_request or self.exhausted != "max_requests"):
                return None
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            await fut

    def hold(self, usd: float, tokens: int) -> Reservation:
        """Count a reservation made durable elsewhere (a batch part leased by an earlier session), as in flight.

        Unconditional: the money is already committed in the ledger. It settles like any reservation.
        """
        self.reserved_usd += usd
        self.reserved_tokens += tokens
        self.leased_usd += usd
        return Reservation(usd, tokens)

    def _lease_for(self, usd: float) -> None:
        assert self.budget_usd is not None
        need = self.spent_usd + self.reserved_usd + usd
        if need <= self.leased_usd:
            return
        room = self.budget_usd - self.prior_spent_usd - self.leased_usd
        block = max(
            self.budget_usd * self.LEASE_FRACTION, usd * self.LEASE_MIN_REQUESTS, need - self.leased_usd
        )
        block = min(block, room)
        new_leased = self.leased_usd + block
        if self._ledger is not None:
            self._ledger.append(
                {"event": "lease", "session": self.session, "usd": block, "leased_usd": new_leased}
            )
        self.leased_usd = new_leased

    # ---- settling -------------------------------------------------------------------------------------
    def settle(self, res: Reservation, usd: float, tokens: int) -> None:
        """The answer arrived: charge the billed cost instead of the reservation.

        A charge that is not a finite number >= 0 (never from checked usage) is taken as the reservation:
        the ledger can never go down.
        """
        if not (math.isfinite(usd) and usd >= 0) or tokens < 0:
            usd, tokens = res.usd, res.tokens
        self._drop(res)
        self.spent_usd += usd
        self.spent_tokens += tokens

    def release(self, res: Reservation) -> None:
        """The attempt was surely not billed (error answer, never sent): give the reservation back."""
        self._drop(res)

    def charge_unknown(self, res: Reservation) -> None:
        """The outcome is unknown (maybe billed): keep it charged at its reservation."""
        self._drop(res)
        self.spent_usd += res.usd
        self.unknown_usd += res.usd
        self.spent_tokens += res.tokens

    def _drop(self, res: Reservation) -> None:
        self.reserved_usd -= res.usd
        self.reserved_tokens -= res.tokens
        if self.reserved_tokens == 0:
            self.reserved_usd = 0.0  # no float dust once nothing is in flight
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def exhaust(self, reason: str) -> None:
        """Stop all further reservations (run stopping); wakes anyone waiting."""
        if self.exhausted is None:
            self.exhausted = reason
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def close(self) -> None:
        """Record what this session really spent (returns the unused lease). Call once, at a clean end."""
        if self._ledger is not None:
            try:
                self._ledger.append(
                    {
                        "event": "close",
                        "session": self.session,
                        "time": utc_now_iso(),
                        "spent_usd": self.spent_usd + self.reserved_usd,
                        "unknown_usd": self.unknown_usd + self.reserved_usd,
                    }
                )
            finally:
                self._ledger.close()
