"""Prompt text: the paper's templates, template overrides and few-shot prefixes (pure string work).

A template is a `str.format` string over the item's fields; multiple choice adds `{choices}`, one
"A: text" line per choice.

>>> item = {"question": "Capital of France?", "choices": {"A": "London", "B": "Paris"}, "answer": "B"}
>>> print(render(MULTIPLE_CHOICE, item))
Please choose an option that best answers the question.
Question: Capital of France?
A: London
B: Paris
The answer is
"""

from __future__ import annotations

from evogm.errors import EvogmError

MULTIPLE_CHOICE = ("Please choose an option that best answers the question.\n"
                   "Question: {question}\n{choices}\nThe answer is")
EXACT_MATCH = "{question}"  # the reference prompts with the bare question
REFLECTION = ("{prompt}\nProposed answer: {proposal}\n"
              "Is the proposed answer true or false? Directly answer with true or false.")


def choice_lines(choices: dict[str, str]) -> str:
    return "\n".join(f"{letter}: {text}" for letter, text in choices.items())


def render(template: str, item: dict) -> str:
    fields = dict(item)
    if isinstance(item.get("choices"), dict):
        fields["choices"] = choice_lines(item["choices"])
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise EvogmError(f"template {template!r} does not fit the items", f"{type(exc).__name__}: {exc}",
                         f"use only the fields {sorted(fields)} (double braces for a literal brace)") from exc


def answer_separator(prompt: str) -> str:
    """What comes between a prompt and its answer: nothing after whitespace, else one space."""
    return "" if prompt[-1:].isspace() else " "


def fewshot_prefix(fewshot: str | list[dict] | None, template: str) -> str:
    """A string is followed by a newline (as the paper joins its `icl_prompt`); items are rendered with answers."""
    if not fewshot:
        return ""
    if isinstance(fewshot, str):
        return fewshot + "\n"
    if not isinstance(fewshot, list) or not all(isinstance(x, dict) and "answer" in x for x in fewshot):
        raise EvogmError("`fewshot` must be a string or a list of items with answers", f"got {type(fewshot).__name__}",
                         'write fewshot: "Question: ...\\nThe answer is B" or a list of {question, answer} items')
    shots = []
    for item in fewshot:
        prompt = render(template, item)
        shots.append(prompt + answer_separator(prompt) + str(item["answer"]))
    return "\n\n".join(shots) + "\n\n"
