"""Synthetic skills: generators of task items in the paper's formats, and their prompt text.

A skill is a function `rng -> item`. Multiple-choice items are
`{"question", "choices": {"A".."D"}, "answer": "B"}`, exact-match items `{"question", "answer"}`.
`render(item)` gives the prompt and the answer text the zoo trains on; the prompts are the
scorer's (MC: the paper's instruction, `Question:`, one line per choice, `The answer is`).

>>> import random
>>> item = SKILLS["reverse"].make(random.Random(0), World.create(0))
>>> sorted(item)
['answer', 'question']
>>> prompt, answer = render(item)
>>> prompt == item["question"] and answer == " " + item["answer"]
True
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Callable

from evogm.tasks import prompts

LETTERS = "ABCD"
COLORS = ["red", "blue", "green", "black", "white", "pink", "gray", "brown"]
ANTONYMS = [
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("up", "down"), ("old", "new"),
    ("dark", "light"), ("hard", "soft"), ("high", "low"), ("wet", "dry"), ("rich", "poor"),
    ("open", "shut"), ("full", "empty"), ("early", "late"), ("loud", "quiet"), ("thick", "thin"),
    ("strong", "weak"), ("long", "short"), ("left", "right"), ("win", "lose"), ("buy", "sell"),
    ("push", "pull"), ("happy", "sad"), ("near", "far"), ("first", "last"),
]


@dataclass(frozen=True)
class World:
    """The fixed facts of one zoo (derived from its seed): which creature has which color."""

    colors: dict[str, str]

    @staticmethod
    def create(seed: int, n: int = 24) -> "World":
        rng = random.Random(f"world-{seed}")
        names: set[str] = set()
        while len(names) < n:  # consonant-vowel names: "bofu", "kemiza"
            names.add("".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(rng.choice([2, 3]))))
        return World({name: rng.choice(COLORS) for name in sorted(names)})


@dataclass(frozen=True)
class Skill:
    name: str
    kind: str  # "multiple_choice" | "exact_match"
    make: Callable[[random.Random, World], dict]


def render(item: dict) -> tuple[str, str]:
    """(prompt, answer text) exactly as the scorer (evogm.tasks) sees them; training appends <eos>."""
    template = prompts.MULTIPLE_CHOICE if "choices" in item else prompts.EXACT_MATCH
    prompt = prompts.render(template, item)
    return prompt, prompts.answer_separator(prompt) + item["answer"]


def multiple_choice(rng: random.Random, question: str, correct: str, wrong: list[str]) -> dict:
    options = [correct] + wrong[:3]
    rng.shuffle(options)
    return {"question": question, "choices": dict(zip(LETTERS, options)), "answer": LETTERS[options.index(correct)]}


def _distinct(rng: random.Random, pool, k: int, exclude=()) -> list:
    return rng.sample([p for p in pool if p not in exclude], k)


# ---- exact-match skills -------------------------------------------------------------------------

def reverse(rng, world):
    word = "".join(rng.choices(string.ascii_lowercase, k=4))
    return {"question": f"Reverse the word: {word}", "answer": word[::-1]}


def sort_digits(rng, world):
    digits = "".join(rng.sample(string.digits, 4))
    return {"question": f"Sort the digits: {digits}", "answer": "".join(sorted(digits))}


def count(rng, world):
    text = "".join(rng.choices("abc", k=7))
    letter = rng.choice("abc")
    return {"question": f"How many {letter} in {text}?", "answer": str(text.count(letter))}


def successor(rng, world):
    i = rng.randrange(24)
    return {"question": f"What comes after {string.ascii_lowercase[i]}?", "answer": string.ascii_lowercase[i + 1 : i + 3]}


def add(rng, world):
    a, b = rng.randrange(10), rng.randrange(10)
    return {"question": f"What is {a} + {b}?", "answer": str(a + b)}


# ---- multiple-choice skills ---------------------------------------------------------------------

def compare(rng, world):
    numbers = [str(n) for n in rng.sample(range(10, 100), 4)]
    best = max(numbers, key=int)
    return multiple_choice(rng, "Which number is the largest?", best, [n for n in numbers if n != best])


def lookup(rng, world):
    name = rng.choice(sorted(world.colors))
    color = world.colors[name]
    return multiple_choice(rng, f"What color is the {name}?", color, _distinct(rng, COLORS, 3, {color}))


def antonym(rng, world):
    word, opposite = rng.choice(ANTONYMS)
    if rng.random() < 0.5:
        word, opposite = opposite, word
    others = [w for pair in ANTONYMS for w in pair if w not in (word, opposite)]
    return multiple_choice(rng, f"What is the opposite of {word}?", opposite, _distinct(rng, others, 3))


# ---- unseen tasks: each needs two or more experts' skills -----------------------------------------

def add_compare(rng, world):
    pairs: dict[int, tuple[int, int]] = {}
    while len(pairs) < 4:
        a, b = rng.randrange(10), rng.randrange(10)
        pairs.setdefault(a + b, (a, b))
    sums = [f"{a} + {b}" for a, b in pairs.values()]
    best = sums[list(pairs).index(max(pairs))]
    return multiple_choice(rng, "Which sum is the largest?", best, [s for s in sums if s != best])


def quiz(rng, world):
    return rng.choice([reverse, sort_digits, count, successor, add])(rng, world)


def trivia(rng, world):
    return rng.choice([compare, lookup, antonym])(rng, world)


def copy_word(rng, world):  # base pretraining only: teaches the exact-match format
    word = "".join(rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(2, 6)))
    return {"question": f"Repeat: {word}", "answer": word}


def pick_word(rng, world):  # base pretraining only: teaches the multiple-choice format
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 6))) for _ in range(4)]
    return multiple_choice(rng, f"Which option is {words[0]}?", words[0], words[1:])


SKILLS = {
    s.name: s
    for s in [
        Skill("reverse", "exact_match", reverse),
        Skill("sort", "exact_match", sort_digits),
        Skill("count", "exact_match", count),
        Skill("successor", "exact_match", successor),
        Skill("add", "exact_match", add),
        Skill("compare", "multiple_choice", compare),
        Skill("lookup", "multiple_choice", lookup),
        Skill("antonym", "multiple_choice", antonym),
        Skill("add_compare", "multiple_choice", add_compare),
        Skill("quiz", "exact_match", quiz),
        Skill("trivia", "multiple_choice", trivia),
        Skill("copy", "exact_match", copy_word),
        Skill("pick", "multiple_choice", pick_word),
    ]
}
UNSEEN = ["add_compare", "quiz", "trivia"]  # tasks no expert is fine-tuned on
FORMAT_ONLY = ["copy", "pick"]  # the base's pretraining formats, never a task


def make_split(skill: str, n: int, seed: int, world: World, split: str) -> list[dict]:
    """n items of one skill; each (skill, split, seed) has its own stream."""
    rng = random.Random(f"{skill}-{split}-{seed}")
    return [SKILLS[skill].make(rng, world) for _ in range(n)]
