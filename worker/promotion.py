"""The promotion decision both learning loops make: does a candidate replace the live version?

A candidate is promoted when its score beats the live one's by more than nothing and by at
least the margin, and when every extra condition the loop names holds (the slow loop's KL
budget and base-skill retention; the fast loop's pin and an unchanged live version). The
first that fails gives the reason; the loops word their reasons themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple


class Decision(NamedTuple):
    promote: bool
    reason: str  # one sentence, shown to the tenant


@dataclass(frozen=True)
class Condition:
    """An extra condition of a promotion: `failed` stops it and `refusal` says why."""

    failed: bool
    refusal: str


def decide(
    candidate: float,
    live: float,
    *,
    margin: float,
    no_gain: str,
    below_margin: str | None = None,
    conditions: Sequence[Condition] = (),
    promoted: str,
) -> Decision:
    """`no_gain`: the reason when the candidate does not beat the live score (a tie changes
    nothing); `below_margin`: when it does, by less than the margin (default: `no_gain`);
    `promoted`: the reason when it is promoted."""
    gain = candidate - live
    # Written so that a NaN score (a broken measurement) never promotes anything.
    if not gain > 0:
        return Decision(False, no_gain)
    if not gain >= margin:
        return Decision(False, below_margin if below_margin is not None else no_gain)
    for condition in conditions:
        if condition.failed:
            return Decision(False, condition.refusal)
    return Decision(True, promoted)
