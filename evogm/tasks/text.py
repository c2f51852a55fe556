"""Pure string functions of scoring: answer parsing, extraction, normalization, effective reliability.

No model, no tokenizer: every rule here is testable on hand-written outputs.

>>> parse_choice("B: Paris is the capital", ["A", "B", "C", "D"], {"A": "London", "B": "Paris"})
'B'
>>> match("so the total is 1,250 dollars.", "1250", extract="last_number")
True
>>> effective_reliability(correct=[True, False, True, False], abstained=[False, False, True, True])
0.0
"""

from __future__ import annotations

import re
import string

INVALID = "Z"  # the reference implementation's "no parsable choice" letter
EXTRACT_MODES = ("whole", "contains", "tail", "last_number")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_ANSWER_PHRASE = r"(?i:the\s+answer\s+is|answer\s*:|answer\s+is|option\s+is)\s*"


def parse_choice(output: str, letters: list[str], choices: dict[str, str] | None = None) -> str:
    """The choice letter a generated answer names, by the paper's rules, in order; INVALID if none.

    1. an explicit "the answer is X" / "answer: X" (the last one wins);
    2. a letter within the first 5 characters ("B", "B: Paris");
    3. a letter within the last 5 characters ("... so it is B.");
    4. for a short output (≤ 40 characters), a choice's text inside it.
    The phrase is case-insensitive, the letter is not (so "the answer is a dog" names nothing).
    Where two letters share a 5-character window ("C: Be…"), the reference takes the first in
    choice order (B); here the one nearest the window's edge (C).
    """
    output = output.strip()
    options = "|".join(re.escape(letter) for letter in letters)
    explicit = re.findall(_ANSWER_PHRASE + rf"({options})\b", output)
    if explicit:
        return explicit[-1]
    found = [letter for letter in output[:5] if letter in letters]
    if found:
        return found[0]
    found = [letter for letter in output[-5:] if letter in letters]
    if found:
        return found[-1]
    if len(output) <= 40 and choices:
        for letter in letters:
            text = choices.get(letter, "").lower()
            if text and text in output.lower():
                return letter
    return INVALID


def normalize(text: str) -> str:
    """Lowercase, trim, collapse whitespace, drop surrounding punctuation and quotes.

    >>> normalize('  "The  Answer." ')
    'the answer'
    """
    text = " ".join(text.lower().split())
    return text.strip(string.punctuation + " ")


def last_number(text: str) -> float | None:
    """The last number written in `text` (thousands commas allowed), or None.

    >>> last_number("3 apples and 1,024.5 pears")
    1024.5
    """
    return _number(_NUMBER.findall(text), -1)


def first_number(text: str) -> float | None:
    """The first number written in `text`, or None.

    >>> first_number("3.8 out of 5")
    3.8
    """
    return _number(_NUMBER.findall(text), 0)


def _number(found: list[str], index: int) -> float | None:
    if not found:
        return None
    try:
        return float(found[index].replace(",", ""))
    except ValueError:  # a lone "-" or ",," cannot reach here, but stay total
        return None


def tail(text: str, words: int = 10) -> str:
    """The last `words` space-separated words: where the paper looks for a GSM8K answer."""
    return " ".join(text.split(" ")[-words:])


def match(output: str, answer: str, *, extract: str = "whole", normalized: bool = True, tail_words: int = 10) -> bool:
    """Whether a generated output answers `answer` under one extraction rule.

    whole: the whole output equals the answer; contains: the answer appears anywhere in the output
    (the reference's exact match); tail: the answer appears in the last `tail_words` words (the
    reference's GSM8K rule); last_number: the output's last number equals the answer's number.
    """
    if extract == "last_number":
        got, want = last_number(output), last_number(answer)
        return got is not None and want is not None and abs(got - want) <= 1e-6 * max(1.0, abs(want))
    if extract == "tail":
        output = tail(output, tail_words)
    if normalized:
        output, answer = normalize(output), normalize(answer)
    if extract == "whole":
        return output == answer
    if extract in ("contains", "tail"):
        return bool(answer) and answer in output
    raise ValueError(f"unknown extract mode {extract!r}; expected one of {EXTRACT_MODES}")


def says_false(reflection: str) -> bool:
    """AbstainQA's second pass: the model abstains when its verdict on its own answer mentions "false"."""
    return "false" in reflection.lower()


def effective_reliability(correct: list[bool], abstained: list[bool]) -> float:
    """(answered correctly − answered wrongly) / total; abstentions count zero, so it can be negative."""
    if len(correct) != len(abstained):
        raise ValueError(f"{len(correct)} correctness flags but {len(abstained)} abstention flags")
    if not correct:
        return 0.0
    answered = [c for c, a in zip(correct, abstained) if not a]
    return (sum(answered) - (len(answered) - sum(answered))) / len(correct)
