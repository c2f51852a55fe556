"""The paper's setting at its real shapes, built locally: random weights, the right sizes, no download.

A random-weight Qwen2.5 of a named shape costs the same to merge and to run as the trained one, and
a byte-level BPE tokenizer with Qwen2.5's vocabulary size (151,936 ids) gives the embedding and the
output head their real sizes; a synthetic word is one token, as a common English word is in Qwen's.
The experts are random rank-r PEFT LoRA adapters on every linear module of the layers; the task
files hold synthetic items whose prompt and answer lengths follow the paper's 8 tasks; the run
config is the shipped `configs/qwen2.5-1.5b-tulu.yaml` with its paths pointed here. Everything is
written once into a cache folder and reused.

>>> folder = build("small", Path("/tmp/ps"), experts=2, rank=4, items=8, dtype="float32")  # doctest: +SKIP
>>> sorted(p.name for p in folder.iterdir())                                               # doctest: +SKIP
['base', 'experts', 'run.yaml', 'tasks']

A random model never emits its EOS token, so every generation runs to max_new_tokens (GSM8K: 200):
the time figures are an upper bound on a trained model's.
"""

from __future__ import annotations

import itertools
import json
import re
import string
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 151_936  # Qwen2.5's embedding rows (its tokenizer holds 151,665 of them)
QWEN = dict(num_key_value_heads=2, vocab_size=VOCAB, tie_word_embeddings=True, rope_theta=1_000_000.0,
            rms_norm_eps=1e-6, max_position_embeddings=32_768)
SHAPES = {  # Qwen2Config keywords of the published models; "small" is a quick check of the whole path
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12),
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14),
    "small": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4),
}
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")  # Qwen2.5's pre-tokenizer
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Synthetic items, lengths in words (one token each): (mean, spread) of the question, choices and
# their lengths, and a shared few-shot prefix. Typical lengths of the public datasets' items.
TASK_SHAPES = {
    "mmlu": dict(question=(45, 30), choices=4, choice=(8, 6)),
    "mmlu_pro": dict(question=(70, 40), choices=10, choice=(10, 6)),
    "hellaswag": dict(question=(45, 15), choices=4, choice=(22, 8)),
    "knowledge_crosswords": dict(question=(60, 20), choices=4, choice=(12, 4), fewshot=350),
    "gsm8k": dict(question=(60, 25)),
    "nlgraph": dict(question=(150, 80)),
    "truthfulqa": dict(question=(12, 6), choices=5, choice=(10, 6)),
}


def folder_for(cache: Path, shape: str, *, experts: int, rank: int, items: int, dtype: str) -> Path:
    return Path(cache).expanduser() / f"{shape}-{dtype}-{experts}x-r{rank}-{items}items"


def build(shape: str, folder: Path, *, experts: int, rank: int, items: int, dtype: str, seed: int = 0) -> Path:
    """Base, tokenizer, adapters, task files and run.yaml under `folder`; parts already there are kept."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "base" / "config.json").exists():
        write_base(folder / "base", shape, dtype, seed)
    for i in range(experts):
        if not (folder / "experts" / f"e{i}" / "adapter_model.safetensors").exists():
            write_adapter(folder / "experts" / f"e{i}", folder / "base", shape, rank, dtype, seed=seed + 1 + i)
    write_tasks(folder / "tasks", vocabulary()[2], items, seed)
    write_config(folder, experts)
    return folder


# ----------------------------------------------------------------------------- tokenizer
def vocabulary() -> tuple[dict[str, int], list[tuple[str, str]], list[str]]:
    """A byte-level BPE of exactly VOCAB ids, as Qwen2.5's tokenizer reads text: (vocab, merges, filler).

    transformers loads a Qwen2 model folder's tokenizer as Qwen2's own class, which keeps a file's
    vocabulary and merges but imposes Qwen's pre-tokenizer, so the vocabulary is built for it:
    the 256 byte symbols, every template word (with and without its leading space) as one token,
    and filler words ("Ġab", "Ġabc", …: a space and 1–4 lowercase letters) as one token each.
    """
    from tokenizers import pre_tokenizers

    from evogm.tasks.prompts import MULTIPLE_CHOICE, REFLECTION

    symbols = ["<|endoftext|>", *sorted(pre_tokenizers.ByteLevel.alphabet())]  # and the 256 byte symbols
    vocab = {c: i for i, c in enumerate(symbols)}
    spaced, filling, bare = {}, {}, {}  # merges by rank group: a word after a space first, bare words last
    config = (ROOT / "configs" / "qwen2.5-1.5b-tulu.yaml").read_text()
    words = [*string.ascii_uppercase, *re.findall(r"[A-Za-z]+", MULTIPLE_CHOICE + REFLECTION + config)]  # " A" too
    for word in dict.fromkeys(words):
        _chain("Ġ" + word, vocab, spaced)
        _chain(word, vocab, bare)
    filler = []
    for word in _letter_words():
        if len(vocab) == VOCAB:
            break
        _chain("Ġ" + word, vocab, filling)
        filler.append(word)
    return vocab, list({**spaced, **filling, **bare}), filler


def _letter_words():
    """a … z, aa … zz, aaa … zzz, aaaa …: shorter first, so that every prefix is a token before its word."""
    for n in range(1, 5):
        for letters in itertools.product(string.ascii_lowercase, repeat=n):
            yield "".join(letters)


def _chain(token: str, vocab: dict, merges: dict) -> None:
    """Make `token` one id: a merge of its prefix and its last character, the prefix made the same way.
    A merge's rank is its group's place, so a bare word's merges never split a spaced word."""
    for end in range(2, len(token) + 1):
        if token[:end] not in vocab and len(vocab) < VOCAB:
            vocab[token[:end]] = len(vocab)
        merges[(token[: end - 1], token[end - 1])] = None


def build_tokenizer():
    """The byte-level BPE of `vocabulary()`, with Qwen2's pre-tokenizer: one token per filler word."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab, merges, _ = vocabulary()
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    split = pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated")
    core.pre_tokenizer = pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                                  use_regex=False)])
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   padding_side="left")


# ----------------------------------------------------------------------------- weights
def model_config(shape: str, dtype: str):
    from transformers import Qwen2Config

    return Qwen2Config(**QWEN, **SHAPES[shape], eos_token_id=0, bos_token_id=0, pad_token_id=0, dtype=dtype)


def write_base(folder: Path, shape: str, dtype: str, seed: int) -> None:
    """A randomly initialised base of `shape` (Qwen2's own init) and the tokenizer, as safetensors."""
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(model_config(shape, dtype)).to(getattr(torch, dtype))
    model.save_pretrained(folder, safe_serialization=True)
    build_tokenizer().save_pretrained(folder)


def write_adapter(folder: Path, base: Path, shape: str, rank: int, dtype: str, seed: int) -> None:
    """A PEFT LoRA adapter folder: random A (r × d_in) and B (d_out × r) on every target module."""
    from safetensors.torch import save_file

    s = SHAPES[shape]
    d, ff = s["hidden_size"], s["intermediate_size"]
    kv = QWEN["num_key_value_heads"] * d // s["num_attention_heads"]  # k and v project to the kv heads only
    dims = {"q_proj": (d, d), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (d, d),
            "gate_proj": (d, ff), "up_proj": (d, ff), "down_proj": (ff, d)}  # (d_in, d_out)
    g, cast = torch.Generator().manual_seed(seed), getattr(torch, dtype)
    tensors = {}
    for layer in range(s["num_hidden_layers"]):
        for name, (d_in, d_out) in dims.items():
            part = "self_attn" if name in TARGETS[:4] else "mlp"
            key = f"base_model.model.model.layers.{layer}.{part}.{name}"
            a, b = torch.randn(rank, d_in, generator=g) / d_in**0.5, torch.randn(d_out, rank, generator=g) * 0.01
            tensors[f"{key}.lora_A.weight"], tensors[f"{key}.lora_B.weight"] = a.to(cast), b.to(cast)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank,
              "target_modules": list(TARGETS), "base_model_name_or_path": str(base)}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=1))


# ----------------------------------------------------------------------------- tasks and config
def write_tasks(folder: Path, filler: list[str], items: int, seed: int) -> None:
    """One paper-format JSON file per task: `items` dev items and as many test items."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, shape in TASK_SHAPES.items():
        text = lambda mean_spread: " ".join(rng.choice(filler, size=_length(rng, *mean_spread)))  # noqa: E731
        data = {split: [_item(shape, text, rng) for _ in range(items)] for split in ("dev", "test")}
        if "fewshot" in shape:
            data["icl_prompt"] = text((shape["fewshot"], 0))
        _write_if_changed(folder / f"{name}.json", json.dumps(data))


def _write_if_changed(file: Path, text: str) -> None:
    """A run keyed on its inputs' modification times (evogm's workspace cache) is not disturbed by a rebuild."""
    if not file.exists() or file.read_text() != text:
        file.write_text(text)


def _length(rng, mean: int, spread: int) -> int:
    return int(max(1, rng.integers(mean - spread, mean + spread + 1)))


def _item(shape: dict, text, rng) -> dict:
    if "choices" not in shape:
        return {"question": text(shape["question"]) + " ?", "answer": str(int(rng.integers(1, 1000)))}
    letters = string.ascii_uppercase[: shape["choices"]]
    return {"question": text(shape["question"]), "choices": {c: text(shape["choice"]) for c in letters},
            "answer": str(rng.choice(list(letters)))}


def write_config(folder: Path, experts: int) -> None:
    """The shipped paper config with its model and task paths pointed at this folder."""
    raw = yaml.safe_load((ROOT / "configs" / "qwen2.5-1.5b-tulu.yaml").read_text())
    raw["models"]["base"] = str(folder / "base")
    raw["models"]["experts"] = {f"e{i}": str(folder / "experts" / f"e{i}") for i in range(experts)}
    for task in raw["tasks"]:
        task["path"] = str(folder / "tasks" / Path(task["path"]).name)
    raw["output"] = str(folder / "runs" / "run")
    _write_if_changed(folder / "run.yaml", yaml.safe_dump(raw, sort_keys=False))
