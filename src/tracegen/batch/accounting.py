"""Dollars of batch parts in ledger.jsonl: one ledger session per part, so any reader counts them right.

A part's worst case is leased in a session of its own (``open`` + ``lease``) after the journal's intent
line and before the upload; collecting the part closes that session with what the output file says was
billed (an abandoned part closes at 0). Readers of the ledger -- a later batch session, online mode's
``Budget.open`` -- therefore count a batch in flight at its worst case and a collected one at its cost,
across any number of crashes, with nothing counted twice. A later batch session holds an earlier session's
outstanding part as a reservation in flight (not as spent), so collecting it frees exactly its unused worst
case. :func:`open_budget` repairs the two crash windows
(journal ahead of the ledger) and returns the in-memory :class:`~tracegen.engine.Budget` the session
reserves through (no ledger of its own: its reservations become durable as part sessions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..engine import Budget, Ledger, Reservation
from ..engine.budget import prior_spend_usd, utc_now_iso
from ..engine.settings import Limits
from .journal import Journal, PartState

__all__ = ["PartLedger", "open_budget"]


@dataclass
class PartLedger:
    """Writes the ledger sessions of batch parts."""

    ledger: Ledger
    budget_usd: float | None

    def lease(self, p: PartState) -> None:
        """The part's worst case is committed (before its upload)."""
        self.ledger.append(
            {
                "event": "open",
                "session": p.session,
                "time": utc_now_iso(),
                "budget_usd": self.budget_usd,
                "batch_part": p.part,
            }
        )
        self.ledger.append(
            {"event": "lease", "session": p.session, "usd": p.reserve_usd, "leased_usd": p.reserve_usd}
        )

    def close(self, p: PartState, spent_usd: float) -> None:
        """The part is over: ``spent_usd`` billed (0 when abandoned)."""
        self.ledger.append(
            {
                "event": "close",
                "session": p.session,
                "time": utc_now_iso(),
                "spent_usd": spent_usd,
                "unknown_usd": 0.0,
            }
        )

    def settle(self, budget: Budget, p: PartState, res: Reservation, usd: float, tokens: int) -> None:
        """Close the part's session and settle its reservation in memory."""
        self.close(p, usd)
        budget.settle(res, usd, tokens)


def open_budget(
    ledger_path: Path, journal: Journal, limits: Limits, trace_cost_usd: float
) -> tuple[Budget, PartLedger, dict[int, Reservation]]:
    """The session's budget, the part ledger, and every outstanding part with its in-memory reservation.

    A part leased by an earlier session (killed before collecting it) is *held*: its worst case counts as
    in flight, not as spent, so collecting it gives back exactly what it did not cost and the session goes
    on with the budget really left (counting it as prior spend made every later request look as if it
    could never fit: a resumed run stopped "budget" with money left). A part with an intent line but no
    lease (crash between the two; nothing was uploaded) is reserved and leased now, or abandoned when it
    no longer fits.
    """
    parts = PartLedger(Ledger(ledger_path), limits.budget_usd)
    entries = parts.ledger.read()
    leased = {str(e.get("session")) for e in entries if e.get("event") == "lease"}
    closed = {str(e.get("session")) for e in entries if e.get("event") == "close"}
    for p in journal.parts.values():  # a crash between the journal's "collected" and the ledger's close
        if p.done is not None and p.session in leased and p.session not in closed:
            parts.close(p, float(p.final.get("cost_usd", 0.0)))
            entries = parts.ledger.read()
    held = {
        p.part: p
        for p in journal.parts.values()
        if p.done is None and p.session in leased and p.session not in closed
    }
    held_sessions = {p.session for p in held.values()}
    prior = prior_spend_usd([e for e in entries if str(e.get("session")) not in held_sessions])
    held_usd = sum(p.reserve_usd for p in held.values())
    # floor: the ledger never counts less than traces.jsonl cost (answers of a held part are in its lease)
    prior += max(0.0, trace_cost_usd - prior - held_usd)
    budget = Budget(
        budget_usd=limits.budget_usd,
        max_requests=limits.max_requests,
        max_total_tokens=limits.max_total_tokens,
        ledger=None,  # durable accounting is per part (module docstring)
        prior_spent_usd=prior,
    )
    outstanding: dict[int, Reservation] = {}
    for p in sorted(journal.parts.values(), key=lambda p: p.part):
        if p.done is not None:
            continue
        if p.part in held:
            outstanding[p.part] = budget.hold(p.reserve_usd, p.reserve_tokens)
            continue
        res = budget.try_reserve(p.reserve_usd, p.reserve_tokens, new_request=False)
        if res is None:
            journal.append({"event": "abandoned", "part": p.part, "reason": "budget"})
            continue
        parts.lease(p)
        outstanding[p.part] = res
    return budget, parts, outstanding
