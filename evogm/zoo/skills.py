"""Synthetic skills: generators of task items in the paper's formats, and their prompt text.

A skill is a function `rng -> item`. Multiple-choice items are
`{"question", "choices": {"A".."D"}, "answer": "B"}`, exact-match items `{"question", "answer"}`.
`render(item)` gives the prompt and the answer text the zoo trains on; the prompts are the
scorer's (MC: the paper's instruction, `Question:`, one line per choice, `The answer is`).

>>> import random
>>> item = SKILLS["add"].make(random.Random(0), World.create(0))
>>> sorted(item)
['answer', 'question']
>>> prompt, answer = render(item)
>>> prompt == item["question"] and answer == " " + item["answer"]
True
"""

from __future__ import annotations

import random
import string
import zlib
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


# ---- exact-match skills: small fixed tables a tiny model memorizes --------------------------------

def successor(rng, world):
    i = rng.randrange(25)
    return {"question": f"After {string.ascii_lowercase[i]}?", "answer": string.ascii_lowercase[i + 1]}


def predecessor(rng, world):
    i = rng.randrange(1, 26)
    return {"question": f"Before {string.ascii_lowercase[i]}?", "answer": string.ascii_lowercase[i - 1]}


def upper(rng, world):
    letter = rng.choice(string.ascii_lowercase)
    return {"question": f"Upper {letter}?", "answer": letter.upper()}


def add(rng, world):
    a, b = rng.randrange(10), rng.randrange(10)
    return {"question": f"{a}+{b}=", "answer": str(a + b)}


def double(rng, world):
    n = rng.randrange(10)
    return {"question": f"Twice {n}?", "answer": str(2 * n)}


def color(rng, world):
    name = rng.choice(sorted(world.colors))
    return {"question": f"Color of {name}?", "answer": world.colors[name]}


def antonym(rng, world):
    word, opposite = rng.choice(ANTONYMS)
    if rng.random() < 0.5:
        word, opposite = opposite, word
    return {"question": f"Opposite of {word}?", "answer": opposite}


# ---- multiple-choice skills ---------------------------------------------------------------------

def compare(rng, world):
    numbers = [str(n) for n in rng.sample(range(10, 100), 4)]
    best = max(numbers, key=int)
    return multiple_choice(rng, "Which number is the largest?", best, [n for n in numbers if n != best])


def capitals(rng, world):
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 5))) for _ in range(4)]
    return multiple_choice(rng, "Which word is in capitals?", words[0].upper(), words[1:])


# ---- unseen tasks: each needs two or more experts' skills -----------------------------------------

def quiz(rng, world):
    """Exact match over four experts' tables in one task."""
    return rng.choice([successor, predecessor, upper, add])(rng, world)


def trivia(rng, world):
    """The color and antonym tables asked as multiple choice (the experts learned them as exact match)."""
    if rng.random() < 0.5:
        name = rng.choice(sorted(world.colors))
        right, question = world.colors[name], f"What color is the {name}?"
        wrong = _distinct(rng, COLORS, 3, {right})
    else:
        word, right = rng.choice(ANTONYMS)
        if rng.random() < 0.5:
            word, right = right, word
        question = f"What is the opposite of {word}?"
        wrong = _distinct(rng, [w for pair in ANTONYMS for w in pair if w not in (word, right)], 3)
    return multiple_choice(rng, question, right, wrong)


def copy_word(rng, world):  # base pretraining only: teaches the exact-match format
    word = "".join(rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(1, 5)))
    return {"question": f"Repeat {word}?", "answer": word}


def pick_word(rng, world):  # base pretraining only: teaches the multiple-choice format
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 6))) for _ in range(4)]
    return multiple_choice(rng, f"Which option is {words[0]}?", words[0], words[1:])


SKILLS = {
    s.name: s
    for s in [
        Skill("successor", "exact_match", successor),
        Skill("predecessor", "exact_match", predecessor),
        Skill("upper", "exact_match", upper),
        Skill("add", "exact_match", add),
        Skill("double", "exact_match", double),
        Skill("color", "exact_match", color),
        Skill("antonym", "exact_match", antonym),
        Skill("compare", "multiple_choice", compare),
        Skill("capitals", "multiple_choice", capitals),
        Skill("quiz", "exact_match", quiz),
        Skill("trivia", "multiple_choice", trivia),
        Skill("copy", "exact_match", copy_word),
        Skill("pick", "multiple_choice", pick_word),
    ]
}
UNSEEN = ["quiz", "trivia"]  # tasks no expert is fine-tuned on
TABLES = ["successor", "predecessor", "upper", "double", "color", "antonym", "add"]  # fixed key → answer
BASE_SHARE = 4  # the base is pretrained on one key in BASE_SHARE of each table


def known_to_base(item: dict) -> bool:
    """Whether the base's pretraining holds this item's key (a fixed quarter of every table)."""
    return zlib.crc32(item["question"].encode()) % BASE_SHARE == 0


def base_item(skill: str, rng: random.Random, world: World) -> dict:
    """An item of `skill` whose key the base knows."""
    while True:
        item = SKILLS[skill].make(rng, world)
        if known_to_base(item):
            return item


FORMAT_ONLY = ["copy", "pick"]  # the base's pretraining formats, never a task


def make_split(skill: str, n: int, seed: int, world: World, split: str) -> list[dict]:
    """n items of one skill; each (skill, split, seed) has its own stream."""
    rng = random.Random(f"{skill}-{split}-{seed}")
    return [SKILLS[skill].make(rng, world) for _ in range(n)]
