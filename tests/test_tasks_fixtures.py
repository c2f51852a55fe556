"""Tiny local components for the task and objective tests: a character tokenizer, random and
trained 2-layer Qwen2 models, and task files. Nothing is downloaded.

The trained model has memorized a handful of multiple-choice and exact-match items (answer, then
EOS), so it answers them confidently: the log-likelihood and generate scorers must agree on it.
"""

from __future__ import annotations

import json
import random
import string

import pytest
import torch
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

CHARS = string.ascii_letters + string.digits + " \n.,:;?!+-*/=()'\"_"
SHORT_MC = "Q: {question}\n{choices}\nThe answer is"  # the paper's shape, shorter: fast to train


def char_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(["<pad>", "<eos>", "<unk>", *CHARS])}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))  # no merges: one token per character
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def tiny_model(vocab_size: int, seed: int = 0, hidden: int = 64) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=0, eos_token_id=1, bos_token_id=None, tie_word_embeddings=True)
    return Qwen2ForCausalLM(config).eval()


def mc_items(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    word = lambda: "".join(rng.choice(string.ascii_lowercase) for _ in range(4))  # noqa: E731
    return [{"question": word(), "choices": {letter: word() for letter in "ABCD"}, "answer": rng.choice("ABCD")} for _ in range(n)]


def em_items(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    pairs = [(rng.randint(10, 49), rng.randint(10, 49)) for _ in range(n)]
    return [{"question": f"{a}+{b}=", "answer": str(a + b)} for a, b in pairs]


def write_task(path, dev: list[dict], test: list[dict] | None = None, **extras) -> str:
    path.write_text(json.dumps({"dev": dev, "test": test if test is not None else dev, **extras}))
    return str(path)


def train(model, tokenizer, texts: list[str], answer_chars: list[int], steps: int = 100) -> None:
    """Fit the answers (the last `answer_chars[i]` tokens of each text, EOS included) by full-batch Adam.

    One thread: on a shared 2-core machine, two threads per step are many times slower."""
    ids = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    width = max(map(len, ids))
    inputs = torch.zeros(len(ids), width, dtype=torch.long)
    labels = torch.full((len(ids), width), -100, dtype=torch.long)
    for row, (seq, k) in enumerate(zip(ids, answer_chars)):
        inputs[row, : len(seq)] = torch.tensor(seq)  # right padding is fine for training
        labels[row, len(seq) - k - 1 : len(seq)] = torch.tensor(seq[-k - 1 :])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model.train()
    try:
        for _ in range(steps):
            loss = model(input_ids=inputs, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        model.eval()
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; two threads on a shared 2-core machine contend badly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer():
    return char_tokenizer()


@pytest.fixture(scope="session")
def confident(tokenizer):
    """(model, mc items, em items): a model that has memorized both item sets."""
    from evogm.tasks.prompts import render

    mcs, ems = mc_items(8, seed=1), em_items(8, seed=2)
    texts = [render(SHORT_MC, item) + " " + item["answer"] for item in mcs] + [item["question"] + item["answer"] for item in ems]
    answers = [2] * len(mcs) + [len(item["answer"]) for item in ems]  # " B" is two characters
    model = tiny_model(len(tokenizer), seed=3)
    train(model, tokenizer, texts, answers)
    return model, mcs, ems
