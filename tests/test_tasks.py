"""Task loading, batching, generation and scorers on tiny local models."""

import json

import pytest
import torch
from test_tasks_fixtures import (SHORT_MC, char_tokenizer, confident, em_items, mc_items, one_thread,  # noqa: F401
                                 tiny_model, tokenizer, write_task)

from evogm.errors import EvogmError
from evogm.tasks import TASK_TYPES, load_task, load_tasks
from evogm.tasks.batching import encode, left_pad, scatter
from evogm.tasks.inference import SharedPrefix, greedy_generate, last_logits
from evogm.tasks.scoring import generate_texts


# ---- specs and files -----------------------------------------------------------------------------

def test_a_bare_file_gets_its_name_and_type_from_the_file(tmp_path):
    mc = load_task(write_task(tmp_path / "capitals.json", mc_items(3, 0)))
    em = load_task(str(write_task(tmp_path / "sums.v2.json", em_items(3, 0))))
    assert (mc.name, type(mc), mc.primary) == ("capitals", TASK_TYPES["multiple_choice"], "accuracy")
    assert (em.name, type(em)) == ("sums", TASK_TYPES["exact_match"])


def test_json_lines_with_a_split_field(tmp_path):
    path = tmp_path / "sums.jsonl"
    rows = [{**item, "split": split} for split in ("dev", "test") for item in em_items(2, hash(split) % 7)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = load_task({"path": str(path)})
    assert [len(task.data.items(s)) for s in ("dev", "test")] == [2, 2]
    assert "split" not in task.data.items("dev")[0]
    path.write_text(json.dumps({"question": "q", "answer": "a", "split": "train"}))
    with pytest.raises(EvogmError, match="split 'train'"):
        load_task({"path": str(path)})


@pytest.mark.parametrize("items", [em_items, mc_items])
def test_an_empty_split_is_refused_only_where_it_is_scored(tmp_path, items):
    path = write_task(tmp_path / "t.json", items(2, 0), test=[])
    task = load_task(path, splits=("dev",))  # loads: only dev will be scored
    assert len(task.data.items("dev")) == 2
    with pytest.raises(EvogmError, match="the 'test' split is empty"):
        task.data.items("test")
    with pytest.raises(EvogmError, match="the 'test' split is empty"):
        load_task(path, splits=("dev", "test"))


def test_unknown_keys_name_the_closest_valid_key(tmp_path):
    path = write_task(tmp_path / "mc.json", mc_items(2, 0))
    with pytest.raises(EvogmError, match="unknown key 'max_tokens': did you mean 'max_new_tokens'"):
        load_task({"path": path, "max_tokens": 5})
    with pytest.raises(EvogmError, match="did you mean 'scoring'"):
        load_task({"path": path, "scorin": "generate"})
    with pytest.raises(EvogmError, match="unknown task type 'multiple-choice': did you mean 'multiple_choice'"):
        load_task({"path": path, "type": "multiple-choice"})
    with pytest.raises(EvogmError, match="unknown key 'extract'"):  # an exact-match key on a multiple-choice task
        load_task({"path": path, "extract": "tail"})


def test_bad_files_and_values_fail_at_load_with_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "gsm8k.json"
    with pytest.raises(EvogmError, match=f"task file not found: {missing}"):
        load_task({"path": str(missing)})
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(EvogmError, match="cannot read task file"):
        load_task({"path": str(tmp_path / "broken.json")})
    bad = mc_items(2, 0)
    bad[1]["answer"] = "E"
    with pytest.raises(EvogmError, match=r"task bad: .*bad.json \[dev\] item 1: answer must be one of the choices \['A', 'B', 'C', 'D'\].*got 'E'"):
        load_task({"path": write_task(tmp_path / "bad.json", bad)})
    with pytest.raises(EvogmError, match="item 0 lacks answer"):
        load_task({"path": write_task(tmp_path / "noanswer.json", [{"question": "q"}]), "type": "exact_match"})
    with pytest.raises(EvogmError, match="limit must be a positive integer"):
        load_task({"path": write_task(tmp_path / "ok.json", em_items(2, 0)), "limit": 0})
    with pytest.raises(EvogmError, match="unknown scoring"):
        load_task({"path": write_task(tmp_path / "ok.json", mc_items(2, 0)), "scoring": "vibes"})
    only_dev = tmp_path / "only_dev.json"
    only_dev.write_text(json.dumps({"dev": em_items(2, 0)}))
    with pytest.raises(EvogmError, match="has no 'test' split"):
        load_task({"path": str(only_dev)}).data.items("test")


def test_repeated_task_names_are_refused(tmp_path):
    path = write_task(tmp_path / "sums.json", em_items(2, 0))
    with pytest.raises(EvogmError, match="task names repeat"):
        load_tasks([{"path": path}, {"path": path, "limit": 1}])


def test_limit_takes_the_first_items_or_a_seeded_subset_in_file_order(tmp_path):
    items = em_items(50, 0)
    path = write_task(tmp_path / "sums.json", items)
    assert load_task({"path": path, "limit": 5}).data.items("dev") == items[:5]
    draw = lambda seed: load_task({"path": path, "limit": 10, "seed": seed}).data.items("dev")  # noqa: E731
    first, again, other = draw(7), draw(7), draw(8)
    assert first == again and first != other and first != items[:10]
    positions = [items.index(item) for item in first]
    assert positions == sorted(positions) and len(set(positions)) == 10
    assert load_task({"path": path, "limit": 500, "seed": 1}).data.items("dev") == items


def test_fewshot_prefix_from_the_spec_or_the_files_icl_prompt(tmp_path):
    items = mc_items(2, 0)
    icl = "Question: Which is a city in France?\nA: London\nB: Paris\nThe answer is B"
    from_file = load_task(write_task(tmp_path / "kc.json", items, icl_prompt=icl))
    assert from_file.prompts("dev")[0].startswith(icl + "\nPlease choose an option")
    shots = load_task({"path": write_task(tmp_path / "mc.json", items), "template": SHORT_MC, "fewshot": items[:1]})
    first = f"Q: {items[0]['question']}\n" + "\n".join(f"{k}: {v}" for k, v in items[0]["choices"].items())
    assert shots.prompts("dev")[1].startswith(f"{first}\nThe answer is {items[0]['answer']}\n\nQ: {items[1]['question']}\nA: ")
    with pytest.raises(EvogmError, match="does not fit the items"):
        load_task({"path": write_task(tmp_path / "t.json", items), "template": "{prompt}"}).prompts("dev")


# ---- batching and generation ----------------------------------------------------------------------

def test_left_padded_batches_give_the_unpadded_logits(tokenizer):
    model = tiny_model(len(tokenizer), seed=0)
    texts = ["a", "hello there", "12+7="]
    batch = left_pad(encode(tokenizer, texts), batch_size=8, pad_id=0)[0]
    batched = last_logits(model, batch)
    for row, index in enumerate(batch.rows):
        alone = model(input_ids=torch.tensor([encode(tokenizer, [texts[index]])[0]])).logits[0, -1]
        torch.testing.assert_close(batched[row], alone, atol=1e-5, rtol=1e-5)


def test_greedy_generation_matches_transformers_generate(tokenizer):
    model = tiny_model(len(tokenizer), seed=1)
    batch = left_pad(encode(tokenizer, ["abc", "a much longer prompt", "x=1\n"]), batch_size=8, pad_id=0)[0]
    ours = greedy_generate(model, batch, max_new_tokens=12, stop_ids=set(), pad_id=0)
    reference = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=12,
                               min_new_tokens=12, do_sample=False, pad_token_id=0)[:, batch.input_ids.shape[1]:]
    assert torch.equal(ours, reference)


def test_a_shared_prefix_is_read_once_and_changes_nothing(tokenizer):
    model = tiny_model(len(tokenizer), seed=2)
    sequences = encode(tokenizer, [f"Choose the best option.\nQ: {q}" for q in ("a", "bcd", "efgh", "ij")])
    shared, plain = left_pad(sequences, 3, 0), left_pad(sequences, 3, 0, min_prefix=10**9)
    assert plain.prefix.numel() == 0 and shared.prefix.tolist() == sequences[0][: len("Choose the best option.\nQ: ")]
    read = SharedPrefix.read(model, shared.prefix)
    reference = torch.stack(scatter(plain, [list(last_logits(model, b)) for b in plain]))
    expected = scatter(plain, [list(greedy_generate(model, b, max_new_tokens=5, stop_ids=set(), pad_id=0)) for b in plain])
    for prefix in (read, SharedPrefix(read.ids, None, model.config)):  # cached keys/values, or prepended tokens
        logits = torch.stack(scatter(shared, [list(last_logits(model, b, prefix)) for b in shared]))
        torch.testing.assert_close(logits, reference, atol=1e-5, rtol=1e-5)
        generated = scatter(shared, [list(greedy_generate(model, b, prefix=prefix, max_new_tokens=5, stop_ids=set(), pad_id=0)) for b in shared])
        assert all(torch.equal(a, b) for a, b in zip(generated, expected))


def prefixed_batch(tokenizer, seed: int):
    """(a tiny model, one batch of five prompts behind a shared prefix, that prefix read once)."""
    model = tiny_model(len(tokenizer), seed=seed)
    sequences = encode(tokenizer, [f"Choose the best option.\nQ: {q}" for q in ("a", "bcd", "efgh", "ij", "k l m n o")])
    shared = left_pad(sequences, 8, 0)
    return model, shared[0], SharedPrefix.read(model, shared.prefix)


def test_a_batch_over_the_prefill_budget_is_read_in_row_chunks_and_generates_the_same(tokenizer, monkeypatch):
    from evogm.tasks import inference

    model, batch, prefix = prefixed_batch(tokenizer, seed=3)
    expected = greedy_generate(model, batch, prefix=prefix, max_new_tokens=6, stop_ids=set(), pad_id=0)
    forwards = []
    model.register_forward_pre_hook(lambda _m, _a, kw: forwards.append(kw["input_ids"].shape), with_kwargs=True)
    monkeypatch.setitem(inference.PREFILL_TOKENS, "cpu", 2 * batch.input_ids.shape[1])  # two rows at a time
    chunked = greedy_generate(model, batch, prefix=prefix, max_new_tokens=6, stop_ids=set(), pad_id=0)
    assert [s[0] for s in forwards[:3]] == [2, 2, 1] and forwards[3] == (5, 1)  # 3 prefill chunks, then steps of all 5
    assert torch.equal(chunked, expected)


def test_a_batch_over_the_generation_budget_is_generated_in_row_groups_with_the_same_tokens(tokenizer, monkeypatch):
    from evogm.tasks import inference

    model, batch, prefix = prefixed_batch(tokenizer, seed=4)
    free = greedy_generate(model, batch, prefix=prefix, max_new_tokens=6, stop_ids=set(), pad_id=0)
    stop = {int(free[0, 0])}  # the first row stops at once: its group of one is padded to the others' length
    expected = greedy_generate(model, batch, prefix=prefix, max_new_tokens=6, stop_ids=stop, pad_id=0)
    monkeypatch.setitem(inference.GENERATION_TOKENS, "cpu", batch.input_ids.shape[1] + len(prefix) + 6)
    prompts = []
    model.register_forward_pre_hook(lambda _m, _a, kw: prompts.append(kw["input_ids"].shape[0])
                                    if kw["input_ids"].shape[1] > 1 else None, with_kwargs=True)
    grouped = greedy_generate(model, batch, prefix=prefix, max_new_tokens=6, stop_ids=stop, pad_id=0)
    assert prompts == [1] * 5  # one row per group
    assert torch.equal(grouped, expected) and (grouped[0, 1:] == 0).all()


def test_generation_stops_at_eos_and_at_stop_strings(tokenizer, confident):
    model, _, ems = confident
    prompts = [item["question"] for item in ems]
    batches = left_pad(encode(tokenizer, prompts), batch_size=3, pad_id=0)  # several batches, sorted by length
    outputs = generate_texts(model, tokenizer, batches, max_new_tokens=20)
    assert outputs == [item["answer"] for item in ems]  # it stopped at EOS: nothing after the answer
    first_digit = {item["answer"][0] for item in ems}.pop()
    cut = generate_texts(model, tokenizer, batches, max_new_tokens=20, stop=(first_digit,))
    assert all(first_digit not in out for out in cut)
    assert any(out == "" for out in cut)


def test_tokenization_runs_once_per_split(tmp_path, confident):
    class Counting(type(char_tokenizer())):
        calls = 0

        def __call__(self, *args, **kwargs):
            Counting.calls += 1
            return super().__call__(*args, **kwargs)

    counting = Counting(tokenizer_object=char_tokenizer().backend_tokenizer, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    model, mcs, ems = confident
    tasks = [load_task({"path": write_task(tmp_path / "mc.json", mcs), "template": SHORT_MC}),
             load_task({"path": write_task(tmp_path / "mcg.json", mcs), "template": SHORT_MC, "scoring": "generate"}),
             load_task({"path": write_task(tmp_path / "em.json", ems), "max_new_tokens": 4})]
    first = [task.evaluate(model, counting, "dev") for task in tasks]
    calls = Counting.calls
    assert [task.evaluate(model, counting, "dev") for task in tasks] == first
    assert Counting.calls == calls > 0
    tasks[0].evaluate(model, counting, "test")
    assert Counting.calls > calls


# ---- scorers on a model that answers confidently --------------------------------------------------

def test_loglik_and_generate_scorers_agree_on_a_confident_model(tmp_path, tokenizer, confident):
    model, mcs, _ = confident
    path = write_task(tmp_path / "mc.json", mcs)
    loglik = load_task({"path": path, "template": SHORT_MC})
    generate = load_task({"path": path, "template": SHORT_MC, "scoring": "generate", "batch_size": 3})
    letters, _ = loglik.predict(model, tokenizer, "dev")
    parsed, texts = generate.predict(model, tokenizer, "dev")
    assert letters == parsed == [item["answer"] for item in mcs]
    assert texts == letters  # " B" then EOS: the generated text is the bare letter
    assert loglik.evaluate(model, tokenizer, "dev") == generate.evaluate(model, tokenizer, "dev") == {"accuracy": 1.0}


def test_multiple_choice_accuracy_counts_wrong_answers(tmp_path, tokenizer, confident):
    model, mcs, _ = confident
    shifted = [{**item, "answer": "ABCD"[("ABCD".index(item["answer"]) + 1) % 4]} for item in mcs[:4]] + mcs[4:]
    task = load_task({"path": write_task(tmp_path / "mc.json", shifted), "template": SHORT_MC})
    assert task.evaluate(model, tokenizer, "dev") == {"accuracy": pytest.approx(4 / 8)}


def test_exact_match_on_a_confident_model(tmp_path, tokenizer, confident):
    model, _, ems = confident
    wrong = ems[:6] + [{**item, "answer": str(int(item["answer"]) + 1)} for item in ems[6:]]
    task = load_task({"path": write_task(tmp_path / "em.json", wrong), "max_new_tokens": 4})
    assert task.evaluate(model, tokenizer, "dev") == {"accuracy": pytest.approx(6 / 8)}
    padded = load_task({"path": write_task(tmp_path / "em2.json", ems), "template": "{question}", "extract": "last_number"})
    assert padded.evaluate(model, tokenizer, "dev") == {"accuracy": 1.0}


@pytest.mark.parametrize("scoring", ["loglik", "generate"])
def test_abstain_scores_effective_reliability_of_the_two_pass_protocol(tmp_path, tokenizer, confident, scoring):
    model, mcs, _ = confident
    half_wrong = [{**item, "answer": "ABCD"[("ABCD".index(item["answer"]) + 1) % 4]} for item in mcs[:4]] + mcs[4:]
    task = load_task({"path": write_task(tmp_path / "ab.json", half_wrong), "type": "abstain", "template": SHORT_MC, "scoring": scoring})
    metrics = task.evaluate(model, tokenizer, "dev")
    _, proposals = task.answerer.predict(model, tokenizer, "dev")
    abstained = task.abstains(model, tokenizer, "dev", proposals)
    answered = [i for i in range(8) if not abstained[i]]
    right = sum(1 for i in answered if i >= 4)
    assert metrics == {"effective_reliability": pytest.approx((right - (len(answered) - right)) / 8), "accuracy": 0.5}
    assert task.primary == "effective_reliability"
    assert len(task._memo) == 8 and task.evaluate(model, tokenizer, "dev") == metrics  # reflections tokenized once


def test_non_finite_logits_raise(tmp_path, tokenizer):
    model = tiny_model(len(tokenizer), seed=0)
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    for scoring in ("loglik", "generate"):
        task = load_task({"path": write_task(tmp_path / "mc.json", mc_items(2, 0)), "scoring": scoring})
        with pytest.raises(FloatingPointError, match="non-finite logits in task mc"):
            task.evaluate(model, tokenizer, "dev")


def test_an_lm_eval_task_without_lm_eval_fails_with_the_install_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError, installed or not
    monkeypatch.setitem(sys.modules, "lm_eval.evaluator", None)
    spec = {"type": "lm_eval", "task": "arc_easy", "dev_split": "validation", "test_split": "test"}
    with pytest.raises(EvogmError, match=r"lm-eval is not installed.*fix: pip install 'evogm\[lm-eval\]'") as caught:
        load_task(spec)
    assert "\n" not in str(caught.value)
