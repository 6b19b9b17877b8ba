"""Guards on what a reflection LM proposes as new instructions.

A proposal is refused (never evaluated, never promoted) when it is empty, was cut off by the
token limit, is far too long, changes nothing, leaks the delimiters we quote data with, carries
a hostile instruction or personal data its parent did not have, or copies user-written
feedback verbatim (how a hostile comment would smuggle itself into a prompt). GEPA's users
reported a truncated reflection being adopted silently; here it cannot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from difflib import SequenceMatcher

# A user's feedback may inspire a rule ("start with Certainly:"), but a long passage of it
# copied into the prompt verbatim is how a hostile comment would plant itself there.
MIN_ECHO_CHARS = 60  # a feedback text this long found verbatim in a proposal is an echo
MAX_SHARED_RUN = 60  # or any run of this many characters shared with one

# What a prompt must never say, whoever wrote it: override the agent's rules, reveal a
# prompt or other people's data, or ask users for their secrets.
_HOSTILE = re.compile(
    r"ignore (all |any )?(the |your )?(previous|prior|above|earlier) (instructions|rules)"
    r"|disregard (all |any )?(the |your )?(previous|prior|above|system)"
    r"|(reveal|print|show|repeat|leak|write|output|disclose) (out )?(the |your |its )?"
    r"(system prompt|instructions|api key|password)"
    r"|system prompt of"
    r"|(other|another|all) (customers?|tenants?|users?|clients?|compan(y|ies))'?s?'? "
    r"(data|orders?|details|addresses|e-?mails?|records|prompts?|conversations?)"
    r"|(send|give|tell|share|e-?mail|provide|type|enter) (me |us )?(your |the )?"
    r"(password|api key|pin|credit card|card number|login)",
    re.IGNORECASE,
)
# Secrets have no place in a prompt at all.
_SECRETS = re.compile(r"api[_ ]?key|password|\bfsk_", re.IGNORECASE)
# Personal data: e-mail addresses; order, card or phone numbers (five digits or more). A prompt
# serves every user of the agent, so one user's data copied into it would reach all of them.
_PERSONAL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+|\d(?:[ -]?\d){4,}")
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


def is_hostile(text: str) -> bool:
    """Whether a text tries to override rules, extract data or phish (for any text that could
    end up in a prompt: proposed instructions, and users' exchanges chosen as demonstrations)."""
    return _HOSTILE.search(text) is not None


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
    if is_hostile(text) or _SECRETS.search(text):
        raise ProposalRejected("hostile instruction")
    if any(found.group() not in parent for found in _PERSONAL.finditer(text)):
        raise ProposalRejected("personal data")
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
