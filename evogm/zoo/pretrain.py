"""The zoo's base model: a tiny Llama causal LM pretrained on the task formats and a quarter of each table.

The base reads the two prompt formats (multiple choice, exact match) on format-only items
(pick the option equal to a word, repeat a word), so it answers every task in the right shape
but has no skill: the experts add those.

>>> model = new_model(seed=0, hidden=32, layers=1)
>>> sum(p.numel() for p in model.parameters()) < 50_000
True
"""

from __future__ import annotations

import random

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from evogm.zoo import skills, training
from evogm.zoo.tokenizer import build_tokenizer


def new_model(seed: int, hidden: int = 128, layers: int = 4, heads: int = 4) -> LlamaForCausalLM:
    """A freshly initialized Llama (about 0.7M parameters at the defaults), float32, eval mode."""
    tokenizer = build_tokenizer()
    # Llama, not Qwen2: AutoTokenizer gives a qwen2 folder Qwen2's own pre-tokenizer, which drops
    # this vocabulary's spaces; a llama folder keeps the tokenizer.json as saved.
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def format_documents(n: int, seed: int, world: skills.World) -> list[training.Document]:
    """n base documents: half format-only items (multiple choice, exact match), half items of every
    table whose key the base knows (so it knows each task's template, and a quarter of its answers)."""
    rng = random.Random(f"format-{seed}")
    docs = []
    for i in range(n):
        if i % 2 == 0:
            docs.append(skills.render(skills.SKILLS[skills.FORMAT_ONLY[(i // 2) % 2]].make(rng, world)))
        else:
            docs.append(skills.render(skills.base_item(rng.choice(skills.TABLES), rng, world)))
    return docs


def pretrain(seed: int, *, steps: int, batch: int, block: int, lr: float, hidden: int, layers: int, log=print):
    """Build and pretrain the base; returns (model, tokenizer)."""
    tokenizer = build_tokenizer()
    model = new_model(seed, hidden=hidden, layers=layers)
    n_docs = steps * batch * block // 60  # enough documents that blocks rarely repeat
    ids, mask = training.pack(format_documents(n_docs, seed, skills.World.create(seed)), tokenizer, answer_only=False)
    ids, mask = training.blocks(ids, mask, block)
    training.train(model, ids, mask, steps=steps, lr=lr, batch=batch, seed=seed, log=log)
    return model, tokenizer
