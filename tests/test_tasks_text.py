"""Scorers on hand-written outputs: no model, no tokenizer."""

import pytest

from evogm.tasks.text import INVALID, effective_reliability, last_number, match, normalize, parse_choice, says_false, tail

LETTERS = ["A", "B", "C", "D"]
CHOICES = {"A": "London", "B": "Paris", "C": "Berlin", "D": "Rome"}


@pytest.mark.parametrize("output, expected", [
    ("B", "B"),                                      # a bare letter
    (" C: Berlin\nQuestion: next one", "C"),         # letter first, then the model rambles on
    ("The answer is D.", "D"),                        # explicit phrase
    ("answer: A, no wait, the answer is C", "C"),    # the last explicit answer wins
    ("I am fairly sure it must be option D", "D"),   # a letter within the last five characters
    ("paris", "B"),                                  # a short output naming a choice's text
    ("the answer is a city in France, and it is a capital too", INVALID),  # 'a' is not the letter A
    ("I do not know which of these capitals it could possibly be.", INVALID),
])
def test_parse_choice_follows_the_reference_rules(output, expected):
    assert parse_choice(output, LETTERS, CHOICES) == expected


def test_parse_choice_reads_a_window_from_its_edge():
    # The reference scans a window in choice order and would read "C: Berlin" as B; the letter
    # nearest the window's edge is taken instead. A sentence starting "Based" still reads as B,
    # as in the reference: the loglik scorer has no such artefacts.
    assert parse_choice("C: Berlin", LETTERS, CHOICES) == "C"
    assert parse_choice("either A or D", LETTERS, CHOICES) == "D"
    assert parse_choice("Based on geography, D", LETTERS, CHOICES) == "B"


def test_parse_choice_respects_the_items_own_letters():
    assert parse_choice("The answer is E", ["A", "B"], {"A": "x", "B": "y"}) == INVALID
    assert parse_choice("The answer is J", list("ABCDEFGHIJ"), {}) == "J"


@pytest.mark.parametrize("text, expected", [
    ("  Paris. ", "paris"),
    ('"New   York"', "new york"),
    ("\tA\n", "a"),
    ("...", ""),
])
def test_normalize(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("so she has 18 apples", 18.0),
    ("from 3 to -4.5 degrees", -4.5),
    ("a total of 1,234 dollars.", 1234.0),
    ("no digits here", None),
    ("answer .5", 0.5),
])
def test_last_number(text, expected):
    assert last_number(text) == expected


def test_gsm8k_rule_looks_only_at_the_last_ten_words():
    early = "The answer is 42 " + "and then I keep talking about other numbers for a long time"  # 42 is 13 words back
    late = "Let me think step by step. Janet sells 16 - 3 - 4 = 9 eggs, so she makes 18 dollars"
    assert len(early.split(" ")) > 10 and tail(early) == " ".join(early.split(" ")[-10:])
    assert not match(early, "42", extract="tail")
    assert match(early, "42", extract="contains")  # the reference's plain exact match would count it
    assert match(late, "18", extract="tail")
    assert match(late, "18", extract="last_number")
    assert not match(late, "9", extract="last_number")


def test_match_modes_and_normalization():
    assert match(" Paris.", "paris", extract="whole")
    assert not match(" Paris.", "paris", extract="whole", normalized=False)
    assert not match("Paris is nice", "paris", extract="whole")
    assert match("Paris is nice", "paris", extract="contains")
    assert not match("anything", "", extract="contains")  # an empty answer matches nothing
    assert match("it is 3.0", "3", extract="last_number")
    assert not match("none", "3", extract="last_number")
    with pytest.raises(ValueError, match="unknown extract mode"):
        match("a", "a", extract="fuzzy")


def test_effective_reliability():
    # 3 answered right, 1 answered wrong, 2 abstained, out of 6.
    correct = [True, True, True, False, True, False]
    abstained = [False, False, False, False, True, True]
    assert effective_reliability(correct, abstained) == pytest.approx((3 - 1) / 6)
    assert effective_reliability([False, False], [False, False]) == -1.0  # it can be negative
    assert effective_reliability([True, False], [True, True]) == 0.0  # abstaining on everything scores zero
    assert effective_reliability([], []) == 0.0
    with pytest.raises(ValueError):
        effective_reliability([True], [])


def test_says_false_reads_the_reflection_as_the_reference_does():
    assert says_false(" False. The answer is wrong")
    assert says_false("that is FALSE")
    assert not says_false(" True")
    assert not says_false("")
