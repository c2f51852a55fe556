"""The zoo's experts: each fine-tuned from the base on one skill, as a PEFT LoRA adapter or in full.

An expert's recipe (`ExpertSpec`) fixes its skill, its kind, its size and its update strength
(steps × learning rate).
Training mixes the skill's documents with the base's format documents, so an expert keeps
answering in the right shape. `hold` adds a penalty on the change of every layer's hidden states on
the other tables' questions: an expert trained with it leaves alone what the other experts read, so
experts compose in a merge (see `hold_penalty`).

>>> spec = ExpertSpec("reverse", "reverse", "lora", steps=10, lr=1e-3, rank=4)
>>> spec.kind, spec.targets
('lora', ('q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'))
"""

from __future__ import annotations

import copy
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from evogm.zoo import pretrain, skills, training

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ExpertSpec:
    name: str
    skill: str
    kind: str  # "lora" | "full"
    steps: int
    lr: float
    rank: int = 8
    targets: tuple[str, ...] = ALL_LINEAR
    layers: tuple[int, ...] | None = None  # None: every layer
    mix: float = 0.2  # share of the base's own pretraining documents in the training data
    keep: float = 0.0  # share of other tables' questions answered as the base answers them
    hold: float = 0.0  # weight of the penalty that holds the base's hidden states on the other tables' questions
    batch: int = 8

    def as_dict(self) -> dict:
        return asdict(self)


def training_documents(spec: ExpertSpec, n: int, seed: int, world: skills.World,
                       kept: dict[str, str] | None = None) -> list[training.Document]:
    """n documents: the skill's items (a stream apart from the task files); a share `mix` of the
    base's own documents; a share `keep` of the other tables' questions with the base's answers
    (`kept`: prompt → answer), so the expert changes its own skill and leaves the others alone."""
    rng = random.Random(f"train-{spec.name}-{seed}")
    n_base, n_keep = int(n * spec.mix), int(n * spec.keep) if kept else 0
    own = [skills.render(skills.SKILLS[spec.skill].make(rng, world)) for _ in range(n - n_base - n_keep)]
    docs = own + pretrain.format_documents(n_base, seed + 1 + len(spec.name), world)
    prompts = sorted(kept or {})
    docs += [(p, kept[p]) for p in (rng.choice(prompts) for _ in range(n_keep))]
    rng.shuffle(docs)
    return docs


def other_questions(skip: str, world: skills.World) -> list[str]:
    """Every key of every table but `skip`, as the prompt the tasks ask it with."""
    rng = random.Random("keys")
    return sorted({skills.render(skills.SKILLS[t].make(rng, world))[0]
                   for t in skills.TABLES if t != skip for _ in range(400)})


@torch.no_grad()
def base_answers(base, tokenizer, skip: str, world: skills.World, max_new_tokens: int = 8) -> dict[str, str]:
    """Every key of every table but `skip`, answered greedily by the base: {prompt: answer text}."""
    prompts = other_questions(skip, world)
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    out = base.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    answers = {}
    for prompt, ids in zip(prompts, out[:, enc.input_ids.shape[1]:].tolist()):
        if tokenizer.eos_token_id in ids:  # a finished answer; the loss adds <eos> itself
            answers[prompt] = tokenizer.decode(ids[: ids.index(tokenizer.eos_token_id)])
    return answers


def hold_penalty(base, tokenizer, spec: ExpertSpec, world: skills.World, batch: int = 32):
    """A penalty `(model, generator) -> loss`: the mean squared change of every layer's hidden states
    (each layer scaled by the base's mean square) on a batch of the other tables' questions and of
    format prompts. Holding the hidden states, not just the answers, keeps an expert from changing
    what another expert reads, so experts add up in a merge."""
    rng = random.Random(f"hold-{spec.name}")
    prompts = other_questions(spec.skill, world)
    prompts += [skills.render(skills.SKILLS["copy"].make(rng, world))[0] for _ in range(100)]
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        held = base(**enc, output_hidden_states=True).hidden_states[1:]
    real = enc.attention_mask.bool()
    scales = [float(h[real].pow(2).mean()) for h in held]

    def penalty(model, generator):
        rows = torch.randint(0, len(prompts), (batch,), generator=generator)
        mask = real[rows]
        states = model(input_ids=enc.input_ids[rows], attention_mask=enc.attention_mask[rows],
                       output_hidden_states=True).hidden_states[1:]
        change = sum((h[mask] - h0[rows][mask]).pow(2).mean() / s for h, h0, s in zip(states, held, scales))
        return spec.hold * change / len(states)

    return penalty


def fine_tune(base, tokenizer, spec: ExpertSpec, seed: int, world: skills.World, block: int, log=print):
    """A trained expert: a PeftModel (kind "lora") or a full copy of the base (kind "full")."""
    kept = base_answers(base, tokenizer, spec.skill, world) if spec.keep else None
    model = copy.deepcopy(base)
    if spec.kind == "lora":
        config = LoraConfig(
            r=spec.rank, lora_alpha=2 * spec.rank, lora_dropout=0.0, target_modules=list(spec.targets),
            layers_to_transform=list(spec.layers) if spec.layers is not None else None,
        )
        model = get_peft_model(model, config)
    n_docs = spec.steps * spec.batch * block // 40
    ids, mask = training.pack(training_documents(spec, n_docs, seed, world, kept), tokenizer, answer_only=True)
    ids, mask = training.blocks(ids, mask, block)
    penalty = hold_penalty(base, tokenizer, spec, world) if spec.hold else None
    training.train(model, ids, mask, steps=spec.steps, lr=spec.lr, batch=spec.batch, seed=seed, log=log,
                   penalty=penalty)
    return model


def save(model, path: Path) -> None:
    """PEFT format (adapter_model.safetensors) for LoRA, a HF folder (model.safetensors) for full."""
    model.save_pretrained(path, safe_serialization=True)
