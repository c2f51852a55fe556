"""The zoo's experts: each fine-tuned from the base on one skill, as a PEFT LoRA adapter or in full.

An expert's recipe (`ExpertSpec`) fixes its skill, its kind, its size and its update strength
(steps × learning rate). The strengths differ on purpose: some experts learn their skill with a
large margin (they still work at λ ≈ 0.5 and interfere at λ = 1), others barely (they need λ ≥ 1),
so no single global scale suits every expert and the coefficients must be searched.
Training mixes the skill's documents with the base's format documents, so an expert keeps
answering in the right shape.

>>> spec = ExpertSpec("reverse", "reverse", "lora", steps=10, lr=1e-3, rank=4)
>>> spec.kind, spec.targets
('lora', ('q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'))
"""

from __future__ import annotations

import copy
import random
from dataclasses import asdict, dataclass
from pathlib import Path

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
    mix: float = 0.5  # share of base format documents in the training data
    batch: int = 16

    def as_dict(self) -> dict:
        return asdict(self)


def training_documents(spec: ExpertSpec, n: int, seed: int, world: skills.World) -> list[training.Document]:
    """n documents: the skill's items (a stream apart from the task files) and format documents."""
    rng = random.Random(f"train-{spec.name}-{seed}")
    n_format = int(n * spec.mix)
    own = [skills.render(skills.SKILLS[spec.skill].make(rng, world)) for _ in range(n - n_format)]
    docs = own + pretrain.format_documents(n_format, seed + 1 + len(spec.name), world)
    rng.shuffle(docs)
    return docs


def fine_tune(base, tokenizer, spec: ExpertSpec, seed: int, world: skills.World, block: int, log=print):
    """A trained expert: a PeftModel (kind "lora") or a full copy of the base (kind "full")."""
    model = copy.deepcopy(base)
    if spec.kind == "lora":
        config = LoraConfig(
            r=spec.rank, lora_alpha=2 * spec.rank, lora_dropout=0.0, target_modules=list(spec.targets),
            layers_to_transform=list(spec.layers) if spec.layers is not None else None,
        )
        model = get_peft_model(model, config)
    n_docs = spec.steps * spec.batch * block // 40
    ids, mask = training.pack(training_documents(spec, n_docs, seed, world), tokenizer, answer_only=True)
    ids, mask = training.blocks(ids, mask, block)
    training.train(model, ids, mask, steps=spec.steps, lr=spec.lr, batch=spec.batch, seed=seed, log=log)
    return model


def save(model, path: Path) -> None:
    """PEFT format (adapter_model.safetensors) for LoRA, a HF folder (model.safetensors) for full."""
    model.save_pretrained(path, safe_serialization=True)
