"""Shared fixtures: tiny real models built locally (nothing downloaded).

`tiny_models` is a session-scoped folder with a 2-layer Qwen2 base, three PEFT LoRA adapters of
different ranks, alphas, scalings and targets, and two full fine-tunes; `tiny_t5` is the same for a
T5 encoder-decoder (2 encoder and 3 decoder blocks, T5's own module names).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_report_header(config) -> str:
    """The versions the suite runs on (CI installs the newest in pyproject's ranges), at the top of its output."""
    import evogm
    from evogm.versions import line

    return f"evogm {evogm.__version__} on {line()}"

LORA_CONFIGS = {
    # name: LoraConfig keyword arguments; init_lora_weights=False gives random (non-zero) B factors
    "lora_qv": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "lora_mlp": dict(r=2, lora_alpha=16, use_rslora=True, target_modules=["up_proj", "down_proj", "o_proj"],
                     rank_pattern={"layers.1.mlp.up_proj": 3}, alpha_pattern={"down_proj": 5}),
    "lora_emb": dict(r=3, lora_alpha=6, target_modules=["embed_tokens", "k_proj", "lm_head"]),
}


T5_LORA_CONFIGS = {
    "lora_qv": dict(r=4, lora_alpha=8, target_modules=["q", "v"]),
    "lora_ffn": dict(r=2, lora_alpha=16, use_rslora=True, target_modules=["wi_0", "wi_1", "wo", "o"],
                     rank_pattern={"decoder.block.2.layer.2.DenseReluDense.wo": 3}, alpha_pattern={"wi_1": 5}),
    "lora_emb": dict(r=3, lora_alpha=6, target_modules=["shared", "k"]),
}


def auto_model(folder: Path):
    """The folder's model through the auto class of its kind (causal LM or encoder-decoder)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    seq2seq = AutoConfig.from_pretrained(folder).is_encoder_decoder
    return (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_pretrained(folder)


def build_t5_base(folder: Path, seed: int = 0, **overrides) -> Path:
    """A random tiny T5 (gated FFN, as Flan-T5) with the zoo's character tokenizer."""
    from transformers import T5Config, T5ForConditionalGeneration

    from evogm.zoo.tokenizer import build_tokenizer

    values = dict(vocab_size=len(build_tokenizer()), d_model=32, d_kv=8, d_ff=64, num_heads=4, num_layers=2,
                  num_decoder_layers=3, feed_forward_proj="gated-gelu", relative_attention_num_buckets=8,
                  pad_token_id=0, eos_token_id=2, decoder_start_token_id=0)
    values.update(overrides)
    torch.manual_seed(seed)
    T5ForConditionalGeneration(T5Config(**values)).save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    return folder


def tiny_config(**overrides):
    from transformers import Qwen2Config

    from evogm.zoo.tokenizer import build_tokenizer

    values = dict(vocab_size=len(build_tokenizer()), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    values.update(overrides)
    return Qwen2Config(**values)


def build_base(folder: Path, seed: int = 0, **overrides) -> Path:
    from transformers import Qwen2ForCausalLM

    from evogm.zoo.tokenizer import build_tokenizer

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(tiny_config(**overrides))
    model.save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    return folder


def build_lora(base: Path, folder: Path, seed: int, **lora) -> Path:
    from peft import LoraConfig, get_peft_model

    model = auto_model(base)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(model, LoraConfig(init_lora_weights=False, base_model_name_or_path=str(base), **lora))
        peft_model.save_pretrained(folder)
    return folder


def build_full(base: Path, folder: Path, seed: int, only: str = "") -> Path:
    """A 'fine-tune': the base with seeded noise on every parameter whose name contains `only`."""
    from evogm.zoo.tokenizer import build_tokenizer

    model = auto_model(base)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if only in name:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """{"base": path, expert name: path, ...}: 3 LoRA adapters and 2 full fine-tunes of one base."""
    root = tmp_path_factory.mktemp("tiny_models")
    base = build_base(root / "base")
    paths = {"base": base}
    for i, (name, lora) in enumerate(LORA_CONFIGS.items()):
        paths[name] = build_lora(base, root / name, seed=10 + i, **lora)
    paths["full_all"] = build_full(base, root / "full_all", seed=20)
    paths["full_mlp"] = build_full(base, root / "full_mlp", seed=21, only="mlp")
    return paths


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> dict[str, Path]:
    """{"base": path, expert name: path, ...}: 3 LoRA adapters and 2 full fine-tunes of one tiny T5."""
    root = tmp_path_factory.mktemp("tiny_t5")
    base = build_t5_base(root / "base")
    paths = {"base": base}
    for i, (name, lora) in enumerate(T5_LORA_CONFIGS.items()):
        paths[name] = build_lora(base, root / name, seed=30 + i, task_type="SEQ_2_SEQ_LM", **lora)
    paths["full_all"] = build_full(base, root / "full_all", seed=40)
    paths["full_ffn"] = build_full(base, root / "full_ffn", seed=41, only="DenseReluDense")
    return paths


@pytest.fixture(scope="session")
def expert_paths(tiny_models) -> dict[str, Path]:
    return {k: v for k, v in tiny_models.items() if k != "base"}


@pytest.fixture(scope="session")
def zoo_tiny(tmp_path_factory) -> Path:
    """A zoo built with the `tiny` preset (3 experts: 2 LoRA, 1 full; 3 seen + 1 unseen task): its folder.

    Built once per session, seed 0; holds base/, experts/, tasks/, run.yaml and zoo.json.
    """
    from evogm.zoo.build import build

    folder = tmp_path_factory.mktemp("zoo_tiny")
    build(folder, seed=0, preset="tiny", log=lambda message: None)
    return folder


@pytest.fixture(scope="session")
def zoo_t5(tmp_path_factory) -> Path:
    """A zoo built with the `t5` preset (a tiny T5; 2 LoRA and 2 full experts on GLUE-shaped label tasks)."""
    from evogm.zoo.build import build

    folder = tmp_path_factory.mktemp("zoo_t5")
    build(folder, seed=0, preset="t5", threads=1, log=lambda message: None)
    return folder
