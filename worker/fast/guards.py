"""Guards on what a reflection LM proposes as new instructions.

A proposal is refused (never evaluated, never promoted) when it is empty, was cut off by the
token limit, is far too long, changes nothing, leaks the delimiters we quote data with, or
copies user-written feedback verbatim (how a hostile comment would smuggle itself into a
prompt). GEPA's users reported a truncated reflection being adopted silently; here it cannot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from difflib import SequenceMatcher

# A user's feedback may inspire a rule ("start with Certainly:"), but a long passage of it
# copied into the prompt verbatim is how a hostile comment would plant itself there.
MIN_ECHO_CHARS = 60  # a feedback text this long found verbatim in a proposal is an echo
MAX_SHARED_RUN = 60  # or any run of this many characters shared with one
_HOSTILE = re.compile(
    r"ignore (all |any )?(the )?(previous|prior|above|earlier) (instructions|rules)"
    r"|disregard (all |any )?(the )?(previous|prior|above|system)"
    r"|(reveal|print|show|repeat|leak) (the |your )?(system prompt|instructions|api key|password)"
    r"|api[_ ]?key|password|\bfsk_",
    re.IGNORECASE,
)
_FENCE = re.compile(r"^```[a-zA-Z]*\n|\n?```$")
_LABEL = re.compile(
    r"^(new |improved |updated )?(system )?(instructions?|prompt)\s*:\s*", re.IGNORECASE
)
_DELIMITERS = ("<<<", ">>>", "<example", "</example")


class ProposalRejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def clean(text: str) -> str:
    """Strip the wrapping models like to add: code fences, a label, surrounding quotes."""
    text = _FENCE.sub("", text.strip()).strip()
    text = _LABEL.sub("", text).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def check_instructions(
    proposal: str,
    *,
    truncated: bool,
    parent: str,
    feedback_texts: Iterable[str],
    max_chars: int,
) -> str:
    """Return the cleaned proposal, or raise ProposalRejected with the reason."""
    if truncated:
        raise ProposalRejected("truncated")
    text = clean(proposal)
    if not text:
        raise ProposalRejected("empty")
    if len(text) > min(max_chars, 4 * len(parent) + 1000):
        raise ProposalRejected("too long")
    if _norm(text) == _norm(parent):
        raise ProposalRejected("unchanged")
    lowered = text.casefold()
    if any(d in lowered for d in _DELIMITERS):
        raise ProposalRejected("echoes quoted data")
    if _HOSTILE.search(text):
        raise ProposalRejected("hostile instruction")
    normalized = _norm(text)
    for feedback in feedback_texts:
        quoted = _norm(feedback)
        if len(quoted) >= MIN_ECHO_CHARS and quoted in normalized:
            raise ProposalRejected("echoes feedback")
        if len(quoted) >= MAX_SHARED_RUN:
            match = SequenceMatcher(None, normalized, quoted, autojunk=False).find_longest_match()
            if match.size >= MAX_SHARED_RUN:
                raise ProposalRejected("echoes feedback")
    return text
