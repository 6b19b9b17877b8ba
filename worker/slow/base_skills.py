"""A fixed, general test of what the base model knew before any tenant trained it, so that
"adapts without losing base skills" is a number: simple factual questions (accuracy) and a few
paragraphs of general text (perplexity). Written for this project; shipped, not downloaded."""

from __future__ import annotations

# (question, accepted answers: any of them, case-insensitive, counts as correct)
FACTS: list[tuple[str, tuple[str, ...]]] = [
    ("What is the capital of France?", ("paris",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What is the capital of Italy?", ("rome",)),
    ("What is the capital of Germany?", ("berlin",)),
    ("How many days are in a week?", ("seven", "7")),
    ("How many hours are in a day?", ("24", "twenty-four", "twenty four")),
    ("What is 2 plus 2?", ("4", "four")),
    ("Which planet is known as the Red Planet?", ("mars",)),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("What do bees make?", ("honey",)),
    ("What is the chemical formula of water?", ("h2o", "h₂o")),
    ("What color is the sky on a clear day?", ("blue",)),
    ("How many legs does a spider have?", ("eight", "8")),
    ("What is the tallest mountain in the world?", ("everest",)),
    ("What language is mostly spoken in Brazil?", ("portuguese",)),
]

TEXT: list[str] = [
    "The water cycle describes how water moves between the oceans, the air and the land. "
    "Heat from the sun evaporates water from seas and lakes. The vapour rises, cools and "
    "condenses into clouds, and falls back to the ground as rain or snow. Rivers then carry "
    "much of it back to the sea, where the cycle begins again.",
    "A good recipe lists the ingredients first and then the steps in the order they are done. "
    "Before cooking, read the whole recipe once, measure what you need, and prepare the pans. "
    "Most mistakes in the kitchen come from rushing, not from a lack of skill.",
    "Trains carry people and goods over long distances using very little energy for each "
    "passenger. Many countries are building faster lines between their largest cities, "
    "because a journey of three or four hours by train can be quicker than flying once the "
    "time spent at airports is counted.",
]
