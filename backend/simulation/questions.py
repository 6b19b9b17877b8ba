"""Customer-support questions, generated from templates by our own code (nothing downloaded):
order numbers, products, dates and places vary, so no two tenants' demos ask the same thing.
A fixed share is held out (by a hash of the text) for evaluation."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

PRODUCTS = [
    "running shoes",
    "rain jacket",
    "coffee grinder",
    "desk lamp",
    "wool sweater",
    "bluetooth speaker",
    "yoga mat",
    "backpack",
    "phone case",
    "kettle",
    "winter boots",
    "sunglasses",
    "cookware set",
    "office chair",
    "water bottle",
    "headphones",
]
COUNTRIES = ["Norway", "Germany", "Canada", "Japan", "Brazil", "Spain", "Kenya", "Australia"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "March", "May", "July", "September", "November"]

# (category, template); {order}, {product}, {country}, {day}, {date}, {amount} are filled in.
TEMPLATES: list[tuple[str, str]] = [
    ("orders", "Where is my order {order}?"),
    ("orders", "My order {order} has not arrived yet. What should I do?"),
    ("orders", "Can you tell me when order {order} will be delivered?"),
    ("orders", "I placed order {order} on {date}. Has it shipped?"),
    ("orders", "Order {order} says delivered but I never got it."),
    ("orders", "Can I add a {product} to order {order}?"),
    ("orders", "Please cancel my order {order}."),
    ("returns", "How do I return the {product} from order {order}?"),
    ("returns", "The {product} I bought is broken. Can I get a replacement?"),
    ("returns", "Can I return a {product} after 30 days?"),
    ("returns", "I want a refund for my {product}. How long does it take?"),
    ("returns", "Do I have to pay for shipping when I return the {product}?"),
    ("shipping", "Do you ship to {country}?"),
    ("shipping", "How long does delivery to {country} take?"),
    ("shipping", "Can I get my {product} delivered on {day}?"),
    ("shipping", "How much is express shipping to {country}?"),
    ("payments", "Why was my card declined for order {order}?"),
    ("payments", "Can I pay for the {product} with PayPal?"),
    ("payments", "I was charged {amount} twice for order {order}."),
    ("payments", "Do you offer payment in installments for a {product}?"),
    ("account", "How do I reset my password?"),
    ("account", "How can I change the email address on my account?"),
    ("account", "Can I delete my account and my data?"),
    ("products", "Is the {product} available in other colors?"),
    ("products", "Is the {product} back in stock soon?"),
    ("products", "What is the warranty on the {product}?"),
    ("products", "Is there a discount on the {product} for students?"),
]


@dataclass(frozen=True)
class SimQuestion:
    text: str
    category: str
    entities: dict[str, str] = field(default_factory=dict)

    @property
    def held_out(self) -> bool:
        return int(hashlib.sha256(self.text.encode()).hexdigest()[:8], 16) % 5 == 0


def question_set(count: int = 300, *, seed: int = 0) -> list[SimQuestion]:
    """`count` distinct questions, reproducible for a seed."""
    rng = random.Random(seed)
    out: dict[str, SimQuestion] = {}
    attempts = 0
    while len(out) < count and attempts < count * 50:
        attempts += 1
        category, template = rng.choice(TEMPLATES)
        values = {
            "order": f"#{rng.randrange(10_000, 99_999)}",
            "product": rng.choice(PRODUCTS),
            "country": rng.choice(COUNTRIES),
            "day": rng.choice(DAYS),
            "date": f"{rng.choice(MONTHS)} {rng.randrange(1, 29)}",
            "amount": f"${rng.randrange(10, 400)}.{rng.randrange(0, 99):02d}",
        }
        text = template.format(**values)
        used = {k: v for k, v in values.items() if "{" + k + "}" in template}
        out.setdefault(text, SimQuestion(text, category, used))
    return list(out.values())


def split(questions: list[SimQuestion]) -> tuple[list[SimQuestion], list[SimQuestion]]:
    """(asked by users, held out for evaluation): about 80% / 20%, stable per question."""
    return [q for q in questions if not q.held_out], [q for q in questions if q.held_out]
