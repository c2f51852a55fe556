"""The paper's setting at its real shapes, built locally: random weights, the right sizes, no download.

A random-weight Qwen2.5 of a named shape costs the same to merge and to run as the trained one, and
a word-level tokenizer with Qwen2.5's vocabulary size (151,936 ids) gives the embedding and the
output head their real sizes. The experts are random rank-r PEFT LoRA adapters on every linear
module of the layers; the task files hold synthetic items whose prompt and answer lengths follow
the paper's 8 tasks; the run config is the shipped `configs/qwen2.5-1.5b-tulu.yaml` with its paths
pointed here. Everything is written once into a cache folder and reused.

>>> folder = build("small", Path("/tmp/ps"), experts=2, rank=4, items=8, dtype="float32")  # doctest: +SKIP
>>> sorted(p.name for p in folder.iterdir())                                               # doctest: +SKIP
['base', 'experts', 'run.yaml', 'tasks']

A random model never emits its EOS token, so every generation runs to max_new_tokens (GSM8K: 200):
the time figures are an upper bound on a trained model's.
"""

from __future__ import annotations

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
FILLER = "Zz"  # filler words' prefix, which no template word has
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
    words = vocabulary()
    if not (folder / "base" / "config.json").exists():
        write_base(folder / "base", shape, dtype, words, seed)
    for i in range(experts):
        if not (folder / "experts" / f"e{i}" / "adapter_model.safetensors").exists():
            write_adapter(folder / "experts" / f"e{i}", folder / "base", shape, rank, dtype, seed=seed + 1 + i)
    write_tasks(folder / "tasks", words, items, seed)
    write_config(folder, experts)
    return folder


# ----------------------------------------------------------------------------- tokenizer
def vocabulary() -> list[str]:
    """Specials, printable characters, the prompt templates' words, then filler words up to VOCAB."""
    from evogm.tasks.prompts import MULTIPLE_CHOICE, REFLECTION

    config = (ROOT / "configs" / "qwen2.5-1.5b-tulu.yaml").read_text()
    template_words = re.findall(r"[A-Za-z]+", MULTIPLE_CHOICE + REFLECTION + config)
    head = ["<|endoftext|>", "<unk>"] + [c for c in string.printable if not c.isspace()]
    head += list(dict.fromkeys(w for w in template_words if w not in head))
    return head + [FILLER + _letters(i) for i in range(VOCAB - len(head))]


def _letters(i: int) -> str:
    """i in base 26, lowercase letters (no digits: the pre-tokenizer splits digits off)."""
    out = ""
    while True:
        i, r = divmod(i, 26)
        out = string.ascii_lowercase[r] + out
        if i == 0:
            return out


def build_tokenizer(words: list[str]):
    """A word-level fast tokenizer over `words`: one token per word, digit or punctuation mark."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                  pre_tokenizers.Digits(individual_digits=True)])
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   unk_token="<unk>", padding_side="left")


# ----------------------------------------------------------------------------- weights
def model_config(shape: str, dtype: str):
    from transformers import Qwen2Config

    config = Qwen2Config(**QWEN, **SHAPES[shape], eos_token_id=0, bos_token_id=0, pad_token_id=0)
    config.torch_dtype = dtype
    return config


def write_base(folder: Path, shape: str, dtype: str, words: list[str], seed: int) -> None:
    """A randomly initialised base of `shape` (Qwen2's own init) and the tokenizer, as safetensors."""
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(model_config(shape, dtype)).to(getattr(torch, dtype))
    model.save_pretrained(folder, safe_serialization=True)
    build_tokenizer(words).save_pretrained(folder)


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
def write_tasks(folder: Path, words: list[str], items: int, seed: int) -> None:
    """One paper-format JSON file per task: `items` dev items and as many test items."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    filler = [w for w in words if w.startswith(FILLER)]
    for name, shape in TASK_SHAPES.items():
        text = lambda mean_spread: " ".join(rng.choice(filler, size=_length(rng, *mean_spread)))  # noqa: E731
        data = {split: [_item(shape, text, rng) for _ in range(items)] for split in ("dev", "test")}
        if "fewshot" in shape:
            data["icl_prompt"] = text((shape["fewshot"], 0))
        (folder / f"{name}.json").write_text(json.dumps(data))


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
    (folder / "run.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
