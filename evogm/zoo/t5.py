"""The T5 zoo (`evogm zoo build DIR --preset t5`): a tiny T5 and its experts on GLUE-shaped tasks.

The paper's second setting merges Flan-T5 experts fine-tuned on GLUE. This zoo has that shape at a
size a CPU builds in seconds: synthetic text-to-label tasks with GLUE's prompts and label words
(evogm's `label` task type), a word-level tokenizer, a T5 (gated FFN, as Flan-T5) pretrained on
every task with random labels (it answers in each task's label words but has no skill), and one
expert per task, as a PEFT LoRA adapter on T5's q, k, v, o, wi_0, wi_1, wo or as a full fine-tune.

Tasks (the GLUE task whose shape each copies):
- sentiment (SST-2): positive if the sentence has more good than bad words;
- grammar (CoLA): acceptable if the verb agrees in number with the noun ("the old dogs run");
- paraphrase (MRPC, QQP): yes if the two phrases hold the same words in any order;
- similarity (STS-B): how many of the two sentences' five positions hold the same word, 0 to 5,
  generated as a number and scored by Spearman's correlation.

>>> world = random.Random(0)
>>> make_item("grammar", world)["target"] in ("acceptable", "unacceptable")
True
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, get_peft_model

from evogm.zoo.experts import ExpertSpec

GOOD = ["good", "great", "fine", "happy", "nice", "bright"]
BAD = ["bad", "awful", "poor", "sad", "grim", "dull"]
ARTICLES = ["the", "a", "every", "some"]
ADJECTIVES = ["red", "small", "old", "quiet", "green", "tall"]
NOUNS = ["cat", "dog", "bird", "child", "tree", "river", "stone", "ship"]
VERBS = ["runs", "sleeps", "sings", "falls", "grows", "waits"]  # and their plural forms, without the s
WORDS = GOOD + BAD + ARTICLES + ADJECTIVES + NOUNS + VERBS
NUMBERED = [n + "s" for n in NOUNS] + [v[:-1] for v in VERBS]  # the plural nouns and verbs grammar uses

TEMPLATES = {  # FusionBench's Flan-T5 GLUE prompts, shortened
    "sentiment": "sentence : {a} . is the sentiment positive or negative ?",
    "grammar": "is the sentence {a} grammatically acceptable or unacceptable ?",
    "paraphrase": "do the phrases {a} and {b} mean the same ? yes or no ?",
    "similarity": "how similar are {a} and {b} from 0 to 5 ?",
}
LABELS = {"sentiment": ["negative", "positive"], "grammar": ["unacceptable", "acceptable"],
          "paraphrase": ["no", "yes"], "similarity": [str(k) for k in range(6)]}
SPECIALS = ["<pad>", "</s>", "<unk>"]
T5_LINEAR = ("q", "k", "v", "o", "wi_0", "wi_1", "wo")


def make_item(task: str, rng: random.Random) -> dict:
    """One item `{"input", "target"}` of a task."""
    words, target = _EXAMPLES[task](rng)
    return {"input": TEMPLATES[task].format(**words), "target": target}


def _sentiment(rng: random.Random) -> tuple[dict, str]:
    good = rng.randint(0, 3)
    bad = rng.choice([k for k in range(4) if k != good])
    words = rng.sample(GOOD, good) + rng.sample(BAD, bad) + rng.sample(NOUNS, 1)
    rng.shuffle(words)
    return {"a": " ".join(words)}, LABELS["sentiment"][good > bad]


def _grammar(rng: random.Random) -> tuple[dict, str]:
    plural, ok = rng.random() < 0.5, rng.random() < 0.5
    noun, verb = rng.choice(NOUNS) + "s" * plural, rng.choice(VERBS)
    singular_verb = plural != ok  # a singular noun takes "runs", a plural one "run"
    words = ["the", rng.choice(ADJECTIVES), noun, verb if singular_verb else verb[:-1]]
    return {"a": " ".join(words)}, LABELS["grammar"][ok]


def _paraphrase(rng: random.Random) -> tuple[dict, str]:
    a = rng.sample(NOUNS + ADJECTIVES, 3)
    same = rng.random() < 0.5
    b = rng.sample(a, 3) if same else rng.sample(a, 2) + [rng.choice([w for w in NOUNS + ADJECTIVES if w not in a])]
    rng.shuffle(b)
    return {"a": " ".join(a), "b": " ".join(b)}, LABELS["paraphrase"][same]


def _similarity(rng: random.Random) -> tuple[dict, str]:
    a = [rng.choice(WORDS) for _ in range(5)]
    shared = rng.randint(0, 5)
    keep = set(rng.sample(range(5), shared))
    b = [w if i in keep else rng.choice([x for x in WORDS if x != w]) for i, w in enumerate(a)]
    return {"a": " ".join(a), "b": " ".join(b)}, str(shared)


_EXAMPLES = {"sentiment": _sentiment, "grammar": _grammar, "paraphrase": _paraphrase, "similarity": _similarity}
TASKS = tuple(_EXAMPLES)


def build_tokenizer():
    """A word-level fast tokenizer over every word the tasks use; `</s>` closes every encoding (as T5's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    template_words = {w for t in TEMPLATES.values() for w in t.replace("{a}", "").replace("{b}", "").split()}
    words = sorted(set(WORDS + NUMBERED) | template_words | {w for labels in LABELS.values() for w in labels})
    vocab = {token: i for i, token in enumerate(SPECIALS + words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # tokens joined by single spaces
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def new_model(vocab_size: int, seed: int, hidden: int, layers: int):
    """A freshly initialized T5 with Flan-T5's gated-GELU FFN, float32, eval mode."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=vocab_size, d_model=hidden, d_kv=hidden // 4, d_ff=2 * hidden, num_heads=4,
                      num_layers=layers, num_decoder_layers=layers, feed_forward_proj="gated-gelu",
                      relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0)
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config).eval()


def train(model, tokenizer, items: list[dict], *, steps: int, lr: float, batch: int, seed: int) -> None:
    """Adam on the targets' cross-entropy (target words, then </s>), batches drawn with a seeded generator."""
    enc = tokenizer([x["input"] for x in items], return_tensors="pt", padding=True)
    labels = tokenizer([x["target"] for x in items], return_tensors="pt", padding=True).input_ids
    labels[labels == tokenizer.pad_token_id] = -100
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        rows = torch.randint(0, len(items), (batch,), generator=generator)
        loss = model(input_ids=enc.input_ids[rows], attention_mask=enc.attention_mask[rows], labels=labels[rows]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def pretraining_items(n: int, seed: int) -> list[dict]:
    """Every task's prompts with random labels of that task: the base learns the formats, not the skills."""
    rng = random.Random(f"t5-base-{seed}")
    tasks = [TASKS[i % len(TASKS)] for i in range(n)]
    return [{**make_item(task, rng), "target": rng.choice(LABELS[task])} for task in tasks]


def fine_tune(base, tokenizer, spec: ExpertSpec, seed: int, n_items: int):
    """An expert trained on its task alone: a PeftModel (LoRA) or a full copy of the base."""
    import copy

    rng = random.Random(f"t5-train-{spec.skill}-{seed}")
    model = copy.deepcopy(base).requires_grad_(spec.kind == "full")
    if spec.kind == "lora":
        model = get_peft_model(model, LoraConfig(r=spec.rank, lora_alpha=2 * spec.rank, lora_dropout=0.0,
                                                 target_modules=list(spec.targets), task_type="SEQ_2_SEQ_LM"))
    train(model, tokenizer, [make_item(spec.skill, rng) for _ in range(n_items)], steps=spec.steps, lr=spec.lr,
          batch=spec.batch, seed=seed)
    return model


def write_tasks(folder: Path, names: list[str], dev: int, test: int, seed: int) -> dict[str, Path]:
    """One JSON per task in evogm's label format: `{"labels", "dev", "test"}`; similarity has STS-B's
    shape, so its file names its metric (a generated number scored by Spearman's correlation)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in names:
        data = {"labels": LABELS[name], **({"metric": "spearman"} if name == "similarity" else {})}
        for split, n in (("dev", dev), ("test", test)):
            rng = random.Random(f"t5-{split}-{name}-{seed}")
            data[split] = [make_item(name, rng) for _ in range(n)]
        files[name] = folder / f"{name}.json"
        files[name].write_text(json.dumps(data))
    return files


def task_specs(files: dict[str, Path]) -> list[dict]:
    """Label tasks (their files say the rest)."""
    return [{"name": name, "path": str(path), "type": "label"} for name, path in files.items()]


@dataclass(frozen=True)
class T5Preset:
    hidden: int
    layers: int
    base_steps: int
    base_lr: float
    experts: tuple[ExpertSpec, ...]
    dev: int
    test: int
    search_budget: int
    unseen: tuple[str, ...] = ()
    train_items: int = 2000


def _experts(steps: int, rank: int, batch: int) -> tuple[ExpertSpec, ...]:
    lora = dict(kind="lora", steps=steps, lr=3e-3, rank=rank, targets=T5_LINEAR, batch=batch)
    full = dict(kind="full", steps=steps, lr=1e-3, batch=batch)
    return (ExpertSpec("sentiment", "sentiment", **lora), ExpertSpec("grammar", "grammar", **lora),
            ExpertSpec("paraphrase", "paraphrase", **full), ExpertSpec("similarity", "similarity", **full))


T5_PRESETS = {
    "t5": T5Preset(hidden=32, layers=2, base_steps=60, base_lr=3e-3, experts=_experts(40, 4, 16), dev=24, test=24,
                   search_budget=0, train_items=400),
    "t5-demo": T5Preset(hidden=64, layers=2, base_steps=400, base_lr=2e-3, experts=_experts(300, 8, 32), dev=200,
                        test=500, search_budget=40),
}


def build_base(plan: T5Preset, seed: int):
    """(base model, tokenizer): the T5 pretrained on every task's format with random labels."""
    tokenizer = build_tokenizer()
    base = new_model(len(tokenizer), seed, plan.hidden, plan.layers)
    train(base, tokenizer, pretraining_items(plan.train_items, seed), steps=plan.base_steps, lr=plan.base_lr,
          batch=32, seed=seed)
    base.requires_grad_(False)
    return base, tokenizer


def seeded(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
