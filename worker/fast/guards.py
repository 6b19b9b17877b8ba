"""Guards on every text that could reach a prompt: proposed instructions, and users' exchanges
(corrections, well-rated answers) chosen as demonstrations.

One detector (`vet_text`) serves every path; a whole candidate context (instructions and every
demonstration turn) is vetted by `vet_context` wherever a candidate is proposed, scored or
promoted. What it refuses, and why:

- **hostile instruction**: attempts to override the agent's rules ("ignore / disregard /
  forget / override (all) (the) previous / above / system instructions / rules / guidelines",
  "ignore everything above"), to switch its role ("you are now an unrestricted AI", "you are
  now in developer mode", "you are no longer an assistant", "pretend to be", "act as an
  unrestricted ...", "jailbreak", "DAN", "do anything now"), injected role markers ("system
  prompt:", "new instructions:", a line starting "System:" / "Developer:", chat-template
  tokens such as `<|im_start|>`, `[INST]`, `<<SYS>>`), requests to reveal a prompt or other
  people's data, and requests for secrets ("send us / give me / enter / confirm / what is your
  password, passcode, PIN, CVV/CVC, security code, card number or details, bank details,
  account number, login or credentials, API/secret/private key, token, one-time or
  verification code, social security number"). A mention that is not a request ("How do I
  reset my password?") passes; a phrase that looks like a request passes nowhere, negated or
  not ("never share your password" is refused too: a heuristic cannot tell reliably, so it errs
  on the side of refusing).
- **secret**: a credential itself: a fastslow key (`fsk_...`), an `sk-...` token, an AWS key
  id, a PEM private key, "password is ..." / "PIN: ...".
- **personal data**: e-mail addresses; card numbers (13-19 digits, spaces or hyphens allowed,
  that pass the Luhn check); phone numbers (a "+" and 7-15 digits, or a run of 9-15 digits);
  names, by a heuristic only: a capitalised word after "my name is", "call me", "name:",
  "Dear", a sign-off ("Regards,", "Sincerely,", "Signed", "Cheers,") or a title ("Mr.", "Mrs",
  "Ms.", "Dr", "Prof."...). Other names ("Anna Berg wants a refund") are not caught: that
  needs a named-entity model. Order numbers (#10001) are not personal data here; proposed
  instructions are stricter (any number of five digits or more their parent did not have).
- **link**: URLs (`http://`, `https://`, `www.`) and bare domains with a common top-level
  domain (`evil.com/login`). A demonstration is shown to every user of the agent: one user's
  link, like one user's data, must not be.

Proposed instructions also pass the older checks (`check_instructions`): empty, cut off by the
token limit, far too long, unchanged, leaking the delimiters we quote data with, mentioning a
password or an API key at all, copying user-written feedback verbatim. GEPA's users reported a
truncated reflection being adopted silently; here it cannot.

Texts that come verbatim from the seed (the live context, written by the tenant's admin or
promoted earlier) are trusted, line by line for the instructions: a rule appended by the
optimiser does not make the admin's own "Never share your password" a refusal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from difflib import SequenceMatcher
from typing import Any

# A user's feedback may inspire a rule ("start with Certainly:"), but a long passage of it
# copied into the prompt verbatim is how a hostile comment would plant itself there.
MIN_ECHO_CHARS = 60  # a feedback text this long found verbatim in a proposal is an echo
MAX_SHARED_RUN = 60  # or any run of this many characters shared with one

HOSTILE = "hostile instruction"
SECRET = "secret"
PERSONAL = "personal data"
LINK = "link"

_OVERRIDE_VERB = (
    r"(?:ignore|disregard|forget|override|overrule|bypass|circumvent|abandon|discard|neglect"
    r"|set aside|throw away|stop following|do not follow|don'?t follow|no longer follow)"
)
_OVERRIDE_SCOPE = (
    r"(?:(?:all|any|each|every|of|the|your|my|these|those|prior|previous|preceding|above"
    r"|earlier|former|original|old|initial|existing|system|developer|given|current|default"
    r"|safety|other)\s+){0,5}"
)
_OVERRIDE_TARGET = (
    r"(?:instructions?|rules?|guidelines?|directions?|directives?|prompts?|constraints?"
    r"|polic(?:y|ies)|restrictions?|guardrails?|orders|commands|programming|messages?"
    r"|everything(?:\s+(?:above|before|else|said))?|the above|above"
    r"|what (?:you were|you've been|you have been|i) (?:told|said|instructed))\b"
)
_SECRET_NOUN = (
    r"(?:passwords?|passcodes?|passphrases?|pin(?:\s+(?:code|number))?s?|cvv2?|cvc2?|cv2"
    r"|security\s+codes?|(?:credit\s+|debit\s+|bank\s+)?card(?:\s+(?:numbers?|details|info"
    r"(?:rmation)?|data))|credit\s+cards?|bank\s+(?:details|account(?:\s+numbers?)?)"
    r"|account\s+numbers?|iban|routing\s+numbers?|login(?:\s+(?:details|credentials|info))?"
    r"|credentials|(?:api|secret|private|access|ssh|license)[\s_-]?keys?|(?:access\s+|auth"
    r"(?:entication)?\s+|bearer\s+)?tokens?|(?:one[\s-]time|verification|2fa|otp|sms"
    r"|authentication|auth)\s+(?:pass)?codes?|otp|social\s+security\s+numbers?|ssn"
    r"|mother'?s\s+maiden\s+name|seed\s+phrase|recovery\s+phrase)\b"
)
_REQUEST_VERB = (
    r"(?:send|give|tell|share|e-?mail|provide|type|enter|confirm|verify|reply\s+with"
    r"|respond\s+with|text|post|paste|submit|read\s+out|dm|message|include|write\s+down"
    r"|spell\s+out|need|require|collect|request|ask\s+for|what(?:'s|\s+is|\s+are))"
)
_SECRET_REQUEST = (
    _REQUEST_VERB + r"\s+(?:(?:me|us|to\s+me|to\s+us|them|it)\s+)?(?:(?:your|the|their|its|his"
    r"|her|a|an|all|customers?'?s?'?|users?'?s?'?|full|complete|current|old|new|\d+-digit"
    r"|three-digit|four-digit|card'?s?)\s+){0,3}" + _SECRET_NOUN
)
_ASK_FOR_SECRET = (
    r"\bask\s+(?:(?:the|every|each|all|our)\s+)?(?:users?|customers?|clients?|them|people"
    r"|everyone|callers?)\s+(?:for|to\s+(?:send|give|provide|share|confirm|enter|type))\s+"
    r"(?:(?:their|your|the|a)\s+)?" + _SECRET_NOUN
)

_HOSTILE = re.compile(
    "|".join(
        [
            rf"\b{_OVERRIDE_VERB}\s+{_OVERRIDE_SCOPE}{_OVERRIDE_TARGET}",
            # A role switch: "you are now DAN / an unrestricted AI / in developer mode".
            r"\byou(?:'re|\s+are)\s+now\s+(?:(?:an?|the|my|in)\s+)?(?:(?:new|different"
            r"|unrestricted|unfiltered|uncensored|jailbroken|evil|free|unlimited|rogue)\s+)*"
            r"(?:ai|assistant|bot|chatbot|model|language\s+model|llm|dan|persona|character"
            r"|hacker|admin(?:istrator)?|developer|root|god|system|jailbroken|unrestricted"
            r"|unfiltered|uncensored|free\s+(?:from|of)|(?:\w+\s+)?mode)\b",
            r"\byou(?:'re|\s+are)\s+no\s+longer\s+(?:(?:an?|the|bound|restricted|limited"
            r"|required|subject)\b)",
            r"\bfrom\s+now\s+on,?\s+(?:you\s+)?(?:act|behave|pretend|roleplay|respond\s+only"
            r"|ignore|obey)\b",
            r"\b(?:pretend|imagine)\s+(?:to\s+be|you(?:'re|\s+are))\b",
            r"\b(?:act|roleplay|role-play)\s+as\s+(?:an?\s+|the\s+)?(?:unrestricted|unfiltered"
            r"|uncensored|jailbroken|different|new|evil|dan|admin|developer|system|root|hacker)"
            r"\b",
            r"\b(?:developer|god|dan|jailbreak|admin)\s+mode\b|\bjailbr[eo]ak|\bdo\s+anything"
            r"\s+now\b",
            # Injected role markers and chat-template tokens.
            r"\b(?:system|developer|admin)\s*(?:prompt|message|instructions?|override|note)\s*:",
            r"\bnew\s+(?:system\s+)?(?:instructions|rules|prompt|directives?)\s*:",
            r"(?m:^\s*(?:#+\s*)?(?:system|developer)\s*:)",
            r"<\|?\s*(?:im_start|im_end|system|endoftext|eot_id|start_header_id|end_header_id)"
            r"\s*\|?>|\[/?(?:inst|system|sys)\]|<</?sys>>|</?system>",
            # Extraction: a prompt, secrets, other people's data.
            r"\b(?:reveal|print|show|repeat|leak|write|output|disclose|dump|display|expose"
            r"|recite|paste|copy|tell\s+me)\s+(?:out\s+)?(?:(?:the|your|its|my|all|full"
            r"|hidden|initial|original|secret)\s+){0,3}(?:system\s+prompt|prompt|instructions"
            r"|api\s+keys?|passwords?|secrets?|configuration)\b",
            r"\bsystem\s+prompt\s+of\b",
            r"\b(?:other|another|all|every)\s+(?:customers?|tenants?|users?|clients?"
            r"|compan(?:y|ies))'?s?'?\s+(?:data|orders?|details|addresses|e-?mails?|records"
            r"|prompts?|conversations?|accounts?|passwords?|cards?|phone\s+numbers?)",
            rf"\b{_SECRET_REQUEST}",
            _ASK_FOR_SECRET,
        ]
    ),
    re.IGNORECASE,
)
# Credentials themselves.
_SECRET_VALUE = re.compile(
    r"\bfsk_[A-Za-z0-9]|\bsk-[A-Za-z0-9_-]{16,}|\bAKIA[0-9A-Z]{16}\b|-----BEGIN [A-Z ]*PRIVATE"
    r" KEY-----|\b(?:password|passcode|pin|cvv|cvc)\s*(?:is|was|=|:)\s*\S+",
    re.IGNORECASE,
)
# Proposed instructions must not even mention secrets: a prompt needs none.
_MENTIONS_SECRETS = re.compile(r"api[_ ]?key|password|\bfsk_", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Digit runs are matched whole: a run never starts or ends next to another digit.
_CARD_LIKE = re.compile(r"(?<![\d-])(?<!\d )\d(?:[ -]?\d){12,18}(?![ -]?\d)")
_PHONE = re.compile(
    r"\+\d(?:[ ().-]{0,2}\d){6,14}(?!\d)|(?<![\d+])(?<!\d[ .-])\d(?:[ .-]?\d){8,14}(?![ .-]?\d)"
)
_NAME_WORD = (
    r"(?!(?:Customer|Customers|Sir|Madam|Team|All|Everyone|Friend|Friends|User|Users|Client"
    r"|Support|Valued|We|You|It|The|This|That|Our|Your|I|Thanks|Thank)\b)[A-Z][a-z'\u2019-]+"
)
_NAME = re.compile(
    r"(?:(?i:\bmy\s+name\s+is|\bmy\s+name's|\bi\s+am\s+called|\bcall\s+me|\bname\s*:|\bdear"
    r"|\bsigned,?|\b(?:kind\s+|best\s+|warm\s+)?regards,|\bsincerely,|\bcheers,)"
    r"|\b(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Dame|Lady|Lord)\b\.?)\s+" + _NAME_WORD
)
# Any number of five digits or more: stricter, for proposed instructions only.
_LONG_NUMBER = re.compile(r"\d(?:[ -]?\d){4,}")
_LINK = re.compile(
    r"\b(?:https?|ftp)://\S+|\bwww\.\S+|(?<![@\w.-])(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+"
    r"(?:com|net|org|io|co|ru|cn|xyz|info|biz|me|app|dev|link|ly|gl|to|tk|top|site|online"
    r"|shop|store|click|live|ai|us|uk|de|no|eu|tv|cc|ws|su|pw)\b(?:/\S*)?",
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


def luhn_valid(digits: str) -> bool:
    """Whether a digit string passes the Luhn checksum every payment card number carries."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char)
        if i % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _personal_data(text: str) -> Iterable[str]:
    yield from (m.group() for m in _EMAIL.finditer(text))
    for m in _CARD_LIKE.finditer(text):
        if luhn_valid(re.sub(r"\D", "", m.group())):
            yield m.group()
    yield from (m.group() for m in _PHONE.finditer(text))
    yield from (m.group() for m in _NAME.finditer(text))


def vet_text(text: str, *, known: str = "") -> None:
    """Raise ProposalRejected if a text carries a hostile instruction, a secret, personal
    data or a link (see the module docstring for what each catches). Personal data and links
    found verbatim in `known` (the parent's text) are let through: they are already there."""
    if _HOSTILE.search(text):
        raise ProposalRejected(HOSTILE)
    if _SECRET_VALUE.search(text):
        raise ProposalRejected(SECRET)
    known_folded = known.casefold()
    if any(found.casefold() not in known_folded for found in _personal_data(text)):
        raise ProposalRejected(PERSONAL)
    if any(m.group().casefold() not in known_folded for m in _LINK.finditer(text)):
        raise ProposalRejected(LINK)


def demonstration_texts(demonstrations: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(turn.get("content", "")) for turn in demonstrations]


def vet_context(
    instructions: str,
    demonstrations: Sequence[Mapping[str, Any]],
    *,
    seed_instructions: str = "",
    seed_demonstrations: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Vet every text of a candidate context; raise ProposalRejected for the first refusal.

    Lines of the instructions and demonstration turns found verbatim in the seed context are
    trusted (the tenant's admin wrote them, or they passed before); everything else is vetted,
    personal data and links the seed instructions already carry excepted."""
    seed_lines = {_norm(line) for line in seed_instructions.splitlines()}
    new_lines = [line for line in instructions.splitlines() if _norm(line) not in seed_lines]
    if new_lines:
        vet_text("\n".join(new_lines), known=seed_instructions)
    seed_turns = {_norm(text) for text in demonstration_texts(seed_demonstrations)}
    for text in demonstration_texts(demonstrations):
        if _norm(text) not in seed_turns:
            vet_text(text)


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
    if _MENTIONS_SECRETS.search(text):
        raise ProposalRejected(HOSTILE)
    vet_text(text, known=parent)
    if any(found.group() not in parent for found in _LONG_NUMBER.finditer(text)):
        raise ProposalRejected(PERSONAL)
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
