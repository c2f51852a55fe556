"""lm-eval's greedy generate_until on evogm's decoding loop: request by request, the strings lm-eval's
own HFLM gives through transformers' generate; every other request still goes to transformers."""

from __future__ import annotations

import pytest
import torch
from test_tasks_fixtures import confident, em_items, one_thread, tiny_model, tokenizer  # noqa: F401

pytest.importorskip("lm_eval", reason="lm-eval is an optional extra: pip install 'evogm[lm-eval]'")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from evogm.tasks.harness_generate import Ended, SpecialStop, greedy_until, last_char_tokens, route_greedy  # noqa: E402

PROMPTS = ["abc", "a much longer prompt", "x=1\n", "Q: 12+7=", "hello", "z", "The answer is", "(3*4)-"]


def chaotic_model(tokenizer, seed: int = 1):
    """A random model with large weights: it says different things, of different lengths, to each prompt
    (the default initialization repeats one character forever)."""
    model, generator = tiny_model(len(tokenizer), seed=seed), torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight in (p for p in model.parameters() if p.ndim == 2):
            weight.copy_(torch.randn(weight.shape, generator=generator) * 0.4)
    return model


def hflm(model, tokenizer, routed: bool) -> HFLM:
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=3)  # several batches, rows of unequal length
    if routed:
        route_greedy(lm)
    return lm


def requests(prompts: list[str], **gen_kwargs) -> list[Instance]:
    return [Instance("generate_until", {}, (p, {"do_sample": False, **gen_kwargs}), i) for i, p in enumerate(prompts)]


def test_stop_strings_cut_where_transformers_generate_cuts(tokenizer):
    model = chaotic_model(tokenizer)
    plain, routed = hflm(model, tokenizer, False), hflm(model, tokenizer, True)
    free = plain.generate_until(requests(PROMPTS, until=[], max_gen_toks=12), disable_tqdm=True)
    assert len(set(free)) == len(PROMPTS) and min(map(len, free)) < 12  # some rows end at EOS
    stop_lists = ([free[0][5]], [free[1][6], free[4][9]], [free[4][3:5]], [free[7][1:3], "\n"])
    cut = set()
    for until in stop_lists:
        asked = requests(PROMPTS, until=until, max_gen_toks=12)
        expected = plain.generate_until(asked, disable_tqdm=True)
        assert routed.generate_until(asked, disable_tqdm=True) == expected, until
        cut |= {len(text) for text, whole in zip(expected, free) if text != whole}
    assert len(cut) >= 3  # rows of one batch cut at different places
    # alone in its batch, a row whose two-character stop has its last character earlier on its own
    row, at = next((r, i) for r, t in enumerate(free) for i in range(1, len(t) - 1)
                   if t[i + 1] in t[:i] and t.find(t[i:i + 2]) == i)
    alone = requests([PROMPTS[row]], until=[free[row][at:at + 2]], max_gen_toks=12)
    expected = plain.generate_until(alone, disable_tqdm=True)
    assert routed.generate_until(alone, disable_tqdm=True) == expected == [free[row][:at]]
    assert routed.evogm_generate_calls == {"greedy": 3 * len(stop_lists) + 1, "transformers": 0}


def test_rows_that_end_at_eos_are_padded_as_transformers_pads_them(tokenizer, confident):
    model, _, ems = confident  # answers then EOS, at different lengths within a batch
    prompts = [item["question"] for item in ems]
    asked = requests(prompts, until=["\n\n"], max_gen_toks=8)
    routed = hflm(model, tokenizer, True)
    outputs = routed.generate_until(asked, disable_tqdm=True)
    assert outputs == hflm(model, tokenizer, False).generate_until(asked, disable_tqdm=True)
    assert outputs == [item["answer"] for item in ems]
    assert routed.evogm_generate_calls["transformers"] == 0
    context, mask = routed.tok_batch_encode(prompts)
    tokens = greedy_until(routed, context, mask, ["\n\n"], {}, max_new_tokens=8)
    ends = [len(item["answer"]) for item in ems]  # where each row's EOS is
    assert tokens.shape[1] == max(ends) + 1  # the loop ends once every row has its EOS
    for row, end in enumerate(ends):
        assert tokens[row, end] == tokenizer.eos_token_id and (tokens[row, end + 1:] == tokenizer.pad_token_id).all()


def test_a_row_past_its_eos_reads_pads_as_in_transformers(tokenizer):
    model = chaotic_model(tokenizer)
    plain, routed = hflm(model, tokenizer, False), hflm(model, tokenizer, True)
    free = plain.generate_until(requests(PROMPTS, until=[], max_gen_toks=12), disable_tqdm=True)
    early = tokenizer.convert_tokens_to_ids(free[0][3])  # a character the first row says early, made an EOS
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, early]
    asked = requests(PROMPTS, until=["\n"], max_gen_toks=12)
    outputs = routed.generate_until(asked, disable_tqdm=True)
    assert outputs == plain.generate_until(asked, disable_tqdm=True)
    assert outputs[0] == free[0][:4] and max(map(len, outputs)) > 4  # its EOS, a character, is kept; its batch goes on


def test_anything_but_plain_greedy_goes_to_transformers(tokenizer):
    model = chaotic_model(tokenizer)
    model.generation_config.repetition_penalty = 1.5  # a logits processor: not plain greedy
    asked = requests(PROMPTS[:3], until=["."], max_gen_toks=6)
    routed = hflm(model, tokenizer, True)
    expected = hflm(model, tokenizer, False).generate_until(asked, disable_tqdm=True)
    assert routed.generate_until(asked, disable_tqdm=True) == expected
    assert routed.evogm_generate_calls == {"greedy": 0, "transformers": 1}
    sampled = [Instance("generate_until", {}, (p, {"do_sample": True, "temperature": 0.7, "max_gen_toks": 3}), i)
               for i, p in enumerate(PROMPTS[:3])]
    model.generation_config.repetition_penalty = 1.0  # plain again: the request alone asks for sampling
    routed = hflm(model, tokenizer, True)
    routed.generate_until(sampled, disable_tqdm=True)
    assert routed.evogm_generate_calls == {"greedy": 0, "transformers": 1}


def test_a_token_that_may_end_a_stop_string_is_looked_at(tokenizer):
    look, known = last_char_tokens(tokenizer, ["ab", "\n"])
    assert known == len(tokenizer)
    assert {tokenizer.convert_tokens_to_ids(c) for c in "b\n"} <= look
    assert tokenizer.convert_tokens_to_ids("a") not in look  # only a string's last character ends it


def test_a_stop_string_only_a_special_token_holds_sends_the_batch_to_transformers(tokenizer):
    lm = hflm(chaotic_model(tokenizer), tokenizer, True)
    ids = tokenizer.convert_tokens_to_ids
    ended = Ended(lm, ["nk"], last_char_tokens(tokenizer, ["nk"]), rows=2)
    ended.update([ids("a"), ids("b")])
    with pytest.raises(SpecialStop):  # lm-eval's text drops "<unk>"; transformers' stop check reads it
        ended.update([tokenizer.unk_token_id, ids("k")])
    ended = Ended(lm, ["nk"], last_char_tokens(tokenizer, ["nk"]), rows=1)
    assert not ended.update([ids("n")]) and ended.update([ids("k")])  # plain text ends the row


def test_non_finite_logits_fail_the_generation(tokenizer):
    model = chaotic_model(tokenizer)
    with torch.no_grad():
        model.model.norm.weight[0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite logits"):
        hflm(model, tokenizer, True).generate_until(requests(PROMPTS[:2], until=["\n"], max_gen_toks=3),
                                                    disable_tqdm=True)
