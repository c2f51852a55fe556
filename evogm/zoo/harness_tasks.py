"""lm-eval YAML tasks over a zoo's task files: a multiple-choice task and a generate-until task
(`dataset_path: json` over local JSON Lines, nothing downloaded), to try `type: lm_eval` on the zoo.

Fields are named (`doc_to_text: question`), not Jinja templates: lm-eval renders a template for every
document on every evaluation, a cost a search would pay per candidate."""

from __future__ import annotations

import json
from pathlib import Path

from evogm.tasks.prompts import MULTIPLE_CHOICE, render

MC_YAML = """task: {prefix}_{mc}
dataset_path: json
dataset_kwargs:
  data_files: {{validation: {folder}/{mc}_dev.jsonl, test: {folder}/{mc}_test.jsonl}}
output_type: multiple_choice
validation_split: validation
test_split: test
doc_to_text: prompt
doc_to_choice: choices
doc_to_target: label
metric_list:
  - {{metric: acc, aggregation: mean, higher_is_better: true}}
"""

GENERATE_YAML = """task: {prefix}_{gen}
dataset_path: json
dataset_kwargs:
  data_files: {{validation: {folder}/{gen}_dev.jsonl, test: {folder}/{gen}_test.jsonl}}
output_type: generate_until
validation_split: validation
test_split: test
doc_to_text: question
doc_to_target: answer
generation_kwargs: {{until: ["\\n"], max_gen_toks: 4, do_sample: false}}
filter_list:
  - name: strip
    filter: [{{function: remove_whitespace}}, {{function: take_first}}]
metric_list:
  - {{metric: exact_match, aggregation: mean, higher_is_better: true}}
"""


def write_harness_tasks(zoo: Path, folder: Path, items: int = 20, mc: str = "capitals", gen: str = "add",
                        prefix: str = "zoo") -> Path:
    """Write `{prefix}_{mc}` (multiple choice, scored by lm-eval's `acc`) and `{prefix}_{gen}` (greedy
    generation, `exact_match,strip`: the output without its leading space) into `folder`, on the first `items` of the zoo's dev and test items."""
    folder.mkdir(parents=True, exist_ok=True)
    choice = json.loads((zoo / "tasks" / f"{mc}.json").read_text())
    generate = json.loads((zoo / "tasks" / f"{gen}.json").read_text())
    for split in ("dev", "test"):
        rows = [{"prompt": render(MULTIPLE_CHOICE, x), "choices": list(x["choices"]),
                 "label": list(x["choices"]).index(x["answer"])} for x in choice[split][:items]]
        _write_lines(folder / f"{mc}_{split}.jsonl", rows)
        _write_lines(folder / f"{gen}_{split}.jsonl", generate[split][:items])
    names = dict(folder=folder, mc=mc, gen=gen, prefix=prefix)
    (folder / f"{prefix}_{mc}.yaml").write_text(MC_YAML.format(**names))
    (folder / f"{prefix}_{gen}.yaml").write_text(GENERATE_YAML.format(**names))
    return folder


def _write_lines(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
