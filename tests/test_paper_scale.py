"""The paper-scale benchmark's build: real vocabulary size, loadable PEFT adapters, the paper's 8 tasks."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.paper_scale_build import TASK_SHAPES, VOCAB, build


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from evogm.config import load_config
    from evogm.workspace import build_workspace

    folder = build("small", tmp_path_factory.mktemp("paper_scale"), experts=2, rank=4, items=3, dtype="float32")
    return build_workspace(load_config(folder / "run.yaml", ["models.device=cpu", "models.base_copy=disk"]))


def test_the_tokenizer_and_the_model_have_qwen_sizes(workspace):
    tokenizer, model = workspace.models.tokenizer, workspace.models.model
    assert len(tokenizer) == VOCAB == model.config.vocab_size
    words = "Please choose an option that best answers the question".split()
    assert len(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]) == len(words)
    assert tokenizer.unk_token_id not in tokenizer("Question: The answer is B")["input_ids"]


def test_the_adapters_touch_every_linear_module_and_merge(workspace):
    experts, merger = workspace.models.experts, workspace.merger
    assert [e.kind for e in experts] == ["lora", "lora"]
    assert len(experts[0].factors) == 2 * 7 and {f.rank for f in experts[0].factors.values()} == {4}
    before = {k: v.clone() for k, v in merger.model.state_dict().items()}
    after = merger(np.array([0.5, -1.0])).state_dict()
    changed = {k for k in before if not (before[k] == after[k]).all()}
    assert changed == set(experts[0].factors)
    merger.reset()


def test_the_paper_tasks_have_their_lengths(workspace):
    tasks = workspace.tasks
    assert list(tasks) == ["mmlu", "mmlu_pro", "hellaswag", "knowledge_crosswords", "gsm8k", "nlgraph",
                           "truthfulqa", "abstainqa"]
    tokenizer = workspace.models.tokenizer
    lengths = {name: np.mean([len(tokenizer(p)["input_ids"]) for p in task.prompts("dev")])
               for name, task in tasks.items() if hasattr(task, "prompts")}
    assert lengths["mmlu_pro"] > lengths["mmlu"] > lengths["truthfulqa"]
    assert lengths["knowledge_crosswords"] > TASK_SHAPES["knowledge_crosswords"]["fewshot"]  # the few-shot prefix
    assert tasks["gsm8k"].max_new_tokens == 200 and len(tasks["gsm8k"].prompts("dev")) == 3
