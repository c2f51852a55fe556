"""Encoder-decoder experts (T5, BART) against independent computations: PEFT's merge_and_unload,
dense task arithmetic, transformers' own generate and unpadded forward passes."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForSeq2SeqLM

from conftest import build_full, build_lora
from evogm import merge as M
from evogm.cli import main
from evogm.errors import EvogmError
from evogm.export import export_merged
from evogm.merge import Merger
from evogm.models import load_models
from evogm.tasks.scoring import encode_prompts, generate_texts, option_inputs, option_logprobs

DEPTHS = {"encoder": 2, "decoder": 3}


def t5_task_vectors(tiny_t5, names) -> tuple[dict, list[dict]]:
    """θ₀ and each expert's θᵢ − θ₀, with PEFT merging the LoRA adapters into dense weights."""
    from peft import PeftModel

    base = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5["base"]).state_dict()
    vectors = []
    for name in names:
        if "lora" in name:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5["base"])
                model = PeftModel.from_pretrained(model, tiny_t5[name]).merge_and_unload()
        else:
            model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5[name])
        vectors.append({k: v - base[k] for k, v in model.state_dict().items()})
    return base, vectors


def t5_group(name: str, groups: int) -> int:
    """The documented rule: each stack's blocks split by depth; the (tied) embeddings first, final norms last."""
    match = re.search(r"(encoder|decoder)\.block\.(\d+)\.", name)
    if match:
        return int(match[2]) * groups // DEPTHS[match[1]]
    return 0 if re.search(r"shared|embed_tokens|lm_head", name) else groups - 1


@pytest.fixture(scope="module")
def t5_paths(tiny_t5):
    return {k: v for k, v in tiny_t5.items() if k != "base"}


@pytest.fixture(scope="module")
def t5(tiny_t5, t5_paths):
    return load_models(tiny_t5["base"], t5_paths, dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def t5_reference(tiny_t5, t5_paths):
    return t5_task_vectors(tiny_t5, list(t5_paths))


@pytest.fixture
def t5_merger(t5):
    made = []
    yield lambda groups=1: made.append(Merger(t5.model, t5.experts, groups=groups)) or made[-1]
    for merger in made:
        merger.reset()


def assert_state(model, expected: dict, atol=1e-5):
    state = model.state_dict()
    assert set(expected) <= set(state)
    for name, value in expected.items():
        torch.testing.assert_close(state[name], value, atol=atol, rtol=1e-5, msg=name)


def test_t5_experts_load_in_their_forms(t5):
    assert type(t5.model).__name__ == "T5ForConditionalGeneration"
    kinds = {e.name: e.kind for e in t5.experts}
    assert kinds == {"lora_qv": "lora", "lora_ffn": "lora", "lora_emb": "lora", "full_all": "full", "full_ffn": "full"}
    ffn = next(e for e in t5.experts if e.name == "lora_ffn")
    wo = ffn.factors["decoder.block.2.layer.2.DenseReluDense.wo.weight"]
    assert wo.rank == 3 and wo.scaling == pytest.approx(16 / 3**0.5)  # rank_pattern + rsLoRA
    assert ffn.factors["encoder.block.0.layer.1.DenseReluDense.wi_1.weight"].scaling == pytest.approx(5 / 2**0.5)
    emb = next(e for e in t5.experts if e.name == "lora_emb")
    assert "shared.weight" in emb.factors and "decoder.block.1.layer.1.EncDecAttention.k.weight" in emb.factors
    assert all("DenseReluDense" in n for n in next(e for e in t5.experts if e.name == "full_ffn").params)


@pytest.mark.parametrize("lam", [
    np.array([1.0, 0.0, 0.0, 0.0, 0.0]),
    np.array([0.3, -0.7, 1.8, 0.5, -1.2]),
    np.array([[0.2, 1.1], [-0.4, 0.9], [2.5, -1.0], [0.0, 0.6], [1.3, -0.3]]),
])
def test_t5_merge_matches_peft_and_dense_arithmetic(t5_merger, t5_reference, lam):
    merger = t5_merger(1 if lam.ndim == 1 else lam.shape[1])
    lam = merger.coefficients(lam)
    base, vectors = t5_reference
    expected = {k: v + sum(float(lam[i, t5_group(k, lam.shape[1])]) * tv[k] for i, tv in enumerate(vectors))
                for k, v in base.items()}
    assert_state(merger(lam), expected)


def test_t5_groups_split_each_stack_by_depth(t5_merger):
    merger = t5_merger(2)
    assert merger.depths == DEPTHS and merger.n_layers == 2
    assert [merger.group_of(f"decoder.block.{k}.layer.0.SelfAttention.q.weight") for k in range(3)] == [0, 0, 1]
    assert [merger.group_of(f"encoder.block.{k}.layer.0.SelfAttention.q.weight") for k in range(2)] == [0, 1]
    with pytest.raises(EvogmError, match="shallower stack"):
        t5_merger(3)


def test_t5_static_merges_match_dense_math(t5, t5_merger, t5_reference):
    merger = t5_merger()
    base, vectors = t5_reference
    weights = np.array([1.0, 0.5, -0.5, 1.0, 2.0])
    w = torch.tensor(weights, dtype=torch.float32)
    stack = lambda k: torch.stack([tv[k] for tv in vectors])  # noqa: E731
    merger.static("ties", weights=weights, density=0.4, scale=0.8)
    assert_state(t5.model, {k: v + M.ties(stack(k), w, density=0.4, scale=0.8) for k, v in base.items()})
    merger.static("dare", weights=weights, density=1.0)  # nothing dropped: the weighted sum
    assert_state(t5.model, {k: v + M.task_arithmetic(stack(k), w) for k, v in base.items()})
    merger.static("dare", weights=weights, density=1.0, consensus=True)  # nothing dropped: TIES without the trim
    assert_state(t5.model, {k: v + M.ties(stack(k), w, density=1.0) for k, v in base.items()})


def decoder_logits(model):
    """Logits of a fixed encoder input and decoder prefix (token ids of the zoo tokenizer)."""
    ids = torch.tensor([[1, 40, 41, 42]])
    with torch.no_grad():
        return model(input_ids=ids, decoder_input_ids=torch.tensor([[0, 50, 51]])).logits


def test_t5_export_reloads_and_writes_a_mergekit_t5_config(t5, t5_paths, tiny_t5, tmp_path):
    merger = Merger(t5.model, t5.experts, groups=2)
    lam = np.array([[0.5, 1.0], [-0.2, 0.3], [1.2, 0.0], [0.4, 0.4], [0.0, -0.5]])
    try:
        out = export_merged(merger, t5.tokenizer, lam, tmp_path / "model", base=str(tiny_t5["base"]),
                            experts={k: str(v) for k, v in t5_paths.items()}, groups=2)
        expected = decoder_logits(merger(lam))
    finally:
        merger.reset()
    torch.testing.assert_close(decoder_logits(AutoModelForSeq2SeqLM.from_pretrained(out)), expected, atol=1e-5, rtol=1e-5)
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["layers"] == DEPTHS and "encoder and decoder" in recipe["group_rule"] and "mergekit" not in recipe
    weight = yaml.safe_load((out / "mergekit.yaml").read_text())["models"][1]["parameters"]["weight"]
    assert {"filter": "decoder.block.2.", "value": 0.3} in weight and {"filter": "decoder.block.1.", "value": -0.2} in weight
    assert {"filter": "shared", "value": -0.2} in weight


@pytest.fixture(scope="module")
def tiny_bart(tmp_path_factory):
    from transformers import BartConfig, BartForConditionalGeneration

    from evogm.zoo.tokenizer import build_tokenizer

    root = tmp_path_factory.mktemp("bart")
    torch.manual_seed(0)
    config = BartConfig(vocab_size=len(build_tokenizer()), d_model=16, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                        max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                        decoder_start_token_id=2)
    BartForConditionalGeneration(config).save_pretrained(root / "base")
    build_tokenizer().save_pretrained(root / "base")
    lora = build_lora(root / "base", root / "lora", seed=1, task_type="SEQ_2_SEQ_LM", r=2, target_modules=["q_proj", "fc1"])
    return {"base": root / "base", "lora": lora, "full": build_full(root / "base", root / "full", seed=2)}


def test_bart_merges_and_exports_without_a_mergekit_config(tiny_bart, tmp_path):
    out = tmp_path / "bart"
    assert main(["merge", "--base", str(tiny_bart["base"]), "--expert", f"l={tiny_bart['lora']}",
                 "--expert", f"f={tiny_bart['full']}", "--weights", "l=0.5,1.5", "--weights", "f=-0.4,0.2",
                 "--out", str(out)]) == 0
    models = load_models(tiny_bart["base"], {"l": tiny_bart["lora"], "f": tiny_bart["full"]}, device="cpu")
    merger = Merger(models.model, models.experts, groups=2)
    assert merger.depths == {"encoder": 2, "decoder": 2}
    expected = decoder_logits(merger(np.array([[0.5, 1.5], [-0.4, 0.2]])))
    torch.testing.assert_close(decoder_logits(AutoModelForSeq2SeqLM.from_pretrained(out)), expected, atol=1e-5, rtol=1e-5)
    assert "mergekit has no bart architecture" in yaml.safe_load((out / "recipe.yaml").read_text())["mergekit"]
    assert not (out / "mergekit.yaml").exists()


def one_line_error(base, experts, match):
    with pytest.raises(EvogmError, match=match) as info:
        load_models(base, experts, device="cpu")
    assert "fix:" in str(info.value) and "\n" not in str(info.value)


def test_causal_and_seq2seq_experts_do_not_mix(tiny_t5, tiny_models, capsys):
    one_line_error(tiny_t5["base"], {"c": tiny_models["full_all"]}, "is a causal .*, the base an encoder-decoder")
    one_line_error(tiny_models["base"], {"t": tiny_t5["full_all"]}, "is an encoder-decoder .*, the base a causal")
    one_line_error(tiny_t5["base"], {"c": tiny_models["lora_qv"]}, r"\(Qwen2ForCausalLM\), the base is an encoder")
    one_line_error(tiny_models["base"], {"t": tiny_t5["lora_qv"]}, r"task_type SEQ_2_SEQ_LM\), the base is a causal")
    assert main(["merge", "--base", str(tiny_t5["base"]), "--expert", f"c={tiny_models['full_all']}",
                 "--weights", "c=1", "--out", str(tiny_t5["base"].parent / "never")]) == 2
    err = capsys.readouterr().err.strip()
    assert "encoder-decoder" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_t5_generation_matches_transformers_generate(t5):
    model, tokenizer = t5.model, t5.tokenizer
    prompts = ["shared prefix of all: one", "shared prefix of all: a longer second", "shared prefix of all: 3"]
    batches = encode_prompts(tokenizer, prompts, batch_size=2)
    assert batches.prefix.numel() > 0  # the causal path's shared prefix is whole again in the encoder
    texts = generate_texts(model, tokenizer, batches, max_new_tokens=6)
    for prompt, text in zip(prompts, texts):
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            reference = model.generate(ids, max_new_tokens=6, do_sample=False, num_beams=1, use_cache=False)
        assert text == tokenizer.decode(reference[0], skip_special_tokens=True).strip()


def test_bart_generation_starts_with_its_forced_token_as_transformers_does():
    from transformers import BartConfig, BartForConditionalGeneration

    from evogm.tasks import seq2seq
    from evogm.zoo.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(1)
    model = BartForConditionalGeneration(BartConfig(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, decoder_start_token_id=2)).eval()
    model.generation_config.forced_bos_token_id = 1  # as bart-large's generation config
    model.generation_config.forced_eos_token_id = None
    prompts = ["a short one", "and a longer second prompt"]  # right padding: BART's positions start at the left
    encoded = encode_prompts(tokenizer, prompts, batch_size=2)
    ours = seq2seq.greedy_generate(model, seq2seq.batches_for(model, encoded, None, 0)[0], max_new_tokens=5,
                                   stop_ids=set(), pad_id=0)
    for row, prompt in zip(ours, [prompts[i] for i in encoded[0].rows]):
        with torch.no_grad():
            reference = model.generate(tokenizer(prompt, return_tensors="pt").input_ids, max_new_tokens=6, eos_token_id=None,
                                       do_sample=False, num_beams=1, use_cache=False)
        assert reference[0, :2].tolist() == [2, 1] and row.tolist() == reference[0, 2:].tolist()


def test_t5_option_logprobs_match_an_unpadded_forward(t5):
    model, tokenizer = t5.model, t5.tokenizer
    prompts = ["is it good? x", "the second, longer prompt:"]
    options = [[" yes", " no"], ["ab1", "ab2", "ab3"]]
    scores = option_logprobs(model, option_inputs(tokenizer, prompts, options, batch_size=2))
    for i, (prompt, opts) in enumerate(zip(prompts, options)):
        encoded = [tokenizer(o, add_special_tokens=False).input_ids for o in opts]
        common = encoded[0][: next(k for k in range(len(encoded[0])) if len({e[k] for e in encoded}) > 1)]
        decoder = torch.tensor([[0, *common]])
        with torch.no_grad():
            logits = model(input_ids=tokenizer(prompt, return_tensors="pt").input_ids, decoder_input_ids=decoder).logits
        expected = torch.log_softmax(logits[0, -1], -1)[[e[len(common)] for e in encoded]].numpy()
        np.testing.assert_allclose(scores[i, : len(opts)], expected, atol=1e-5)
    assert np.isneginf(scores[0, 2])


def test_evogm_eval_scores_a_t5_merge(tiny_t5, tmp_path, capsys):
    items = [{"question": "Is it A or B?", "choices": {"A": "x", "B": "y"}, "answer": "B"},
             {"question": "Pick C", "choices": {"A": "a", "B": "b", "C": "c"}, "answer": "C"}]
    (tmp_path / "mc.json").write_text(json.dumps({"dev": items, "test": items}))
    (tmp_path / "em.json").write_text(json.dumps({"dev": [{"question": "1+1=", "answer": "2"}], "test": []}))
    argv = ["eval", "--base", str(tiny_t5["base"]), "--tasks", str(tmp_path / "mc.json"), str(tmp_path / "em.json"),
            "--expert", f"q={tiny_t5['lora_qv']}", "--weights", "q=0.5", "--json"]
    for scoring in ("loglik", "generate"):
        assert main(argv + ["--scoring", scoring]) == 0
        result = json.loads(capsys.readouterr().out)
        assert set(result["tasks"]) == {"mc", "em"} and result["tasks"]["mc"]["metrics"]["accuracy"] in (0.0, 0.5, 1.0)


def test_the_shipped_flan_t5_glue_config_is_valid(tmp_path):
    """configs/flan-t5-base-glue.yaml with its /path/to placeholders pointed at stand-in files."""
    from pathlib import Path

    from evogm.config import load_config
    from evogm.tasks import load_tasks

    text = (Path(__file__).parent.parent / "configs" / "flan-t5-base-glue.yaml").read_text()
    path = tmp_path / "paper.yaml"
    path.write_text(text.replace("/path/to", str(tmp_path)))
    raw = yaml.safe_load(path.read_text())
    for folder in [raw["models"]["base"], *raw["models"]["experts"].values()]:
        Path(folder).mkdir(parents=True, exist_ok=True)
    for task in raw["tasks"]:
        items = [{"input": "Is it good?", "target": "3.8" if task["name"] == "stsb" else "yes"}]
        Path(task["path"]).parent.mkdir(parents=True, exist_ok=True)
        Path(task["path"]).write_text(json.dumps({"labels": ["yes", "no"], "dev": items, "test": items}))
    cfg = load_config(path)
    assert len(cfg.models.experts) == 8 and (cfg.search.optimizer, cfg.search.budget, cfg.search.popsize) == ("evogm", 128, 16)
    tasks = load_tasks(list(cfg.tasks))
    assert [(t.primary, t.scoring) for t in tasks] == [("accuracy", "generate")] * 7 + [("spearman", "generate")]
