"""PEFT LoRA adapters as exact task vectors, kept factored.

For a module with factors A (r × d_in), B (d_out × r) and scaling s, PEFT's update of the module's
weight is exactly s · B @ A (embeddings and fan-in-fan-out layers store it transposed). evogm keeps
the factors and merges them as such; it never weights A and B separately.

Which modules an adapter changes, and each one's rank, scaling and layout, are PEFT's answer for
this base (`peft_targets`), not the file's list of tensors: the adapter merges exactly as PEFT's
`merge_and_unload` merges it.

>>> import torch
>>> f = LoraFactors(A=torch.ones(2, 3), B=torch.ones(4, 2), scaling=0.5)
>>> f.delta().shape, float(f.delta()[0, 0])
(torch.Size([4, 3]), 1.0)
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from evogm.errors import EvogmError, EvogmWarning

# base_model.model.<module>.lora_A[.<adapter>].weight  |  <module>.lora_embedding_B[.<adapter>]
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+?)\.lora_(?P<kind>A|B|embedding_A|embedding_B)(?:\.(?!weight$)[^.]+)?(?:\.weight)?$")


# adapter_config.json keys whose effect evogm reproduces exactly (or that do not change the update)
APPLIED = {
    "r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern",  # each module's rank and scaling: PEFT's
    "fan_in_fan_out",  # factors stored transposed (PEFT decides per layer type)
    "target_modules", "exclude_modules", "layers_to_transform", "layers_pattern",  # which modules: PEFT's matching
    "task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision",
    "inference_mode", "lora_dropout", "runtime_config", "megatron_core",
    "init_lora_weights", "loftq_config", "eva_config", "corda_config", "lora_ga_config",  # how training started
    "qalora_group_size",  # read only with use_qalora, which is refused
}
# PEFT options that change which weights an adapter touches or how: refused with the reason
NOT_APPLIED = {
    "use_dora": "DoRA's update is not a linear task vector",
    "modules_to_save": "those modules are full copies, not low-rank task vectors",
    "trainable_token_indices": "those embedding rows are not low-rank task vectors",
    "layer_replication": "it duplicates layers, so the adapted model has another architecture than the base",
    "lora_bias": "the adapter's bias terms are not part of the task vector s·B·A",
    "bias": "the adapter trained the base's biases, which are not low-rank task vectors",
    "target_parameters": "it adapts raw parameters (e.g. MoE experts), which evogm does not read",
    "alora_invocation_tokens": "an activated LoRA applies only after its invocation tokens, not to every input",
    "use_qalora": "QA-LoRA pools the input, so its update is not s·B·A",
    "megatron_config": "Megatron's parallel layers store the factors in another layout",
    "ensure_weight_tying": "the adapter's tied modules are not read as separate task vectors",
}
# init_lora_weights values with which PEFT, loading the adapter, first rewrites the base's weights from their own
# decomposition (LoraLayer.update_layer): such an adapter's update is relative to that rewritten base, not to this one.
# PEFT saves a converted adapter (path_initial_model_for_weight_conversion) with init_lora_weights=true instead.
BASE_REWRITING_INITS = ("pissa", "corda", "olora", "loftq", "lora_ga")


@dataclass(frozen=True)
class LoraFactors:
    """One module's update s · B @ A, laid out like the module's weight (d_out × d_in)."""

    A: torch.Tensor  # (r, d_in)
    B: torch.Tensor  # (d_out, r)
    scaling: float

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def delta(self) -> torch.Tensor:
        return self.scaling * (self.B @ self.A)


def read_adapter(folder: Path, model, *, name: str, base_path: str = "", allow_pickle: bool = False) -> dict[str, LoraFactors]:
    """{base parameter name: LoraFactors} for every module PEFT would adapt, on the model's device.

    Factors in the file for modules PEFT would not adapt are ignored, as PEFT ignores them (with a
    warning); a module PEFT adapts that has no factors in the file is refused (PEFT would leave it at
    its initial, untrained values).
    """
    config = _adapter_config(folder, name)
    _check_base_name(config, base_path, name)
    _check_task_type(config, model, name)
    pairs = _pair_factors(_adapter_tensors(folder, name, allow_pickle), name)
    params = dict(model.named_parameters())
    for module in pairs:
        if f"{module}.weight" not in params:
            raise EvogmError(f"adapter {name!r} targets {module}, which the base lacks",
                             "the adapter was made for another architecture", "use an adapter trained on this base")
    targets = peft_targets(config, model, name)
    missing = [module for module in targets if module not in pairs]
    if missing:
        raise EvogmError(f"adapter {name!r} has no factors for {len(missing)} module(s) its adapter_config.json targets "
                         f"(e.g. {missing[0]})", "the weights file does not match its config (PEFT would leave those "
                         "modules at their initial, untrained values)",
                         "re-save the adapter with PEFT's save_pretrained, or correct target_modules in adapter_config.json")
    ignored = sorted(set(pairs) - set(targets))
    if ignored:
        warnings.warn(f"adapter {name!r} holds factors for {len(ignored)} module(s) its adapter_config.json does not "
                      f"target (e.g. {ignored[0]}); PEFT ignores them, and so does evogm", EvogmWarning, stacklevel=3)
    factors = {}
    for module, target in targets.items():
        pair, param = pairs[module], params[f"{module}.weight"]
        for key, tensor in pair.keys.items():
            check_finite(name, key, tensor)
        if pair.embedding != target.embedding:
            raise EvogmError(f"adapter {name!r} module {module} holds {'embedding' if pair.embedding else 'linear'} "
                             f"factors, the base's layer is {'an embedding' if target.embedding else 'linear'}",
                             "the adapter was made for another base", "use an adapter trained on this base")
        a, b = pair.A, pair.B
        if target.transposed:  # PEFT stores these transposed
            a, b = b.T, a.T
        if a.shape[0] != target.rank:
            raise EvogmError(f"adapter {name!r} module {module} has rank-{a.shape[0]} factors, its adapter_config.json "
                             f"gives it r={target.rank}", "PEFT cannot load factors of another rank than its config's",
                             "re-save the adapter with PEFT, or correct r / rank_pattern in adapter_config.json")
        if (b.shape[0], a.shape[1]) != tuple(param.shape):
            raise EvogmError(f"adapter {name!r} module {module} makes a {b.shape[0]}×{a.shape[1]} update, the base weight is "
                             f"{tuple(param.shape)}", "the adapter was made for another base", "use an adapter of this base")
        # float32 at least: a bfloat16 model's merge then rounds once, at the end (Merger)
        cast = dict(device=param.device, dtype=torch.promote_types(param.dtype, torch.float32))
        factors[f"{module}.weight"] = LoraFactors(A=a.to(**cast).contiguous(), B=b.to(**cast).contiguous(),
                                                  scaling=target.scaling)
    return factors


@dataclass(frozen=True)
class Target:
    """How PEFT adapts one module of the base."""

    rank: int
    scaling: float
    embedding: bool  # an embedding layer: factors lora_embedding_A / lora_embedding_B
    transposed: bool  # the update is stored transposed (embeddings, fan-in-fan-out layers such as GPT-2's Conv1D)


def peft_targets(config: dict, model, name: str) -> dict[str, Target]:
    """{module name: Target} for every module PEFT adapts when it loads this adapter onto `model`, in model order.

    PEFT itself decides: it injects its LoRA layers into a weightless (meta-device) copy of the base, so
    that its own rules apply, whatever they are in the installed version: target_modules (names, a
    regex, 'all-linear', the architecture's default), exclude_modules, layers_to_transform and
    layers_pattern, rank_pattern and alpha_pattern, rsLoRA, the layout of embeddings and fan-in-fan-out
    layers. What PEFT refuses (no module matches, a layer type it cannot adapt) is refused in one line.
    """
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners import lora

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):  # the architecture without its weights: no memory, no copy of the base
            skeleton = type(model)(copy.deepcopy(model.config))
        try:
            # the factors come from the file: PEFT need not initialize them (PiSSA and the like would read the weights)
            peft_config = LoraConfig.from_peft_type(**{**config, "init_lora_weights": True})
            inject_adapter_in_model(peft_config, skeleton, low_cpu_mem_usage=True)
        except Exception as exc:  # noqa: BLE001 — PEFT raises ValueError, TypeError or its NoMatchingPeftModuleError
            raise EvogmError(f"PEFT refuses adapter {name!r} on this base", said(exc),
                             "use an adapter made for this base, or correct its adapter_config.json") from None
    targets = {}
    for module, layer in skeleton.named_modules():
        if not isinstance(layer, lora.LoraLayer):
            continue
        if not isinstance(layer, (lora.Linear, lora.Embedding)):
            raise EvogmError(f"adapter {name!r} adapts {module}, a {type(layer.get_base_layer()).__name__} layer",
                             "evogm merges LoRA on linear and embedding layers only",
                             "merge it into a full model first (PEFT's merge_and_unload) and pass that folder")
        embedding = isinstance(layer, lora.Embedding)
        targets[module] = Target(rank=layer.r["default"], scaling=float(layer.scaling["default"]), embedding=embedding,
                                 transposed=embedding or bool(getattr(layer, "fan_in_fan_out", False)))
    return targets


def said(exc: Exception) -> str:
    """An exception from a library as one line: its type and its message, whitespace collapsed."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _adapter_config(folder: Path, name: str) -> dict:
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EvogmError(f"cannot read {folder / 'adapter_config.json'}", str(exc), "re-save the adapter with PEFT") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise EvogmError(f"expert {name!r} is a {config['peft_type']} adapter", "evogm merges LoRA adapters and full fine-tunes",
                         "use a LoRA adapter")
    init = str(config.get("init_lora_weights", "")).lower()
    if init.startswith(BASE_REWRITING_INITS):
        raise EvogmError(f"adapter {name!r} sets init_lora_weights={config['init_lora_weights']!r}",
                         "PEFT loads it by first rewriting the base's weights from their decomposition, so its update "
                         "is not s·B·A on this base", "convert it to a plain LoRA adapter (PEFT's save_pretrained with "
                         "path_initial_model_for_weight_conversion) or merge it into a full model and pass that folder")
    for key, value in config.items():
        if key not in APPLIED and value not in (None, False, [], {}, "none"):
            why = NOT_APPLIED.get(key, "evogm does not know what this PEFT option does to the update")
            raise EvogmError(f"adapter {name!r} sets {key}={value!r}", why,
                             "merge it into a full model first (PEFT's merge_and_unload) and pass that folder")
    return config


def model_kind(seq2seq: bool) -> str:
    """How an error names a kind of model."""
    return "an encoder-decoder (seq2seq) model" if seq2seq else "a causal (decoder-only) LM"


_TASK_TYPES = {"CAUSAL_LM": False, "SEQ_2_SEQ_LM": True}  # PEFT's task_type → whether it is for an encoder-decoder


def _check_task_type(config: dict, model, name: str) -> None:
    """A causal LM's adapter on an encoder-decoder base, or the reverse, is refused, by its PEFT task_type
    or else by the model class PEFT recorded (auto_mapping.base_model_class)."""
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    made_for, theirs = _made_for(config)
    if theirs is not None and theirs != seq2seq:
        raise EvogmError(f"adapter {name!r} is for {model_kind(theirs)} ({made_for}), the base is {model_kind(seq2seq)}",
                         "an adapter only fits the kind of model it was trained on", "use an adapter trained on this base")


def _made_for(config: dict) -> tuple[str, bool | None]:
    """(what the adapter names, whether that is an encoder-decoder; None when it names neither kind)."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)

    task_type = config.get("task_type") or ""
    if task_type in _TASK_TYPES:
        return f"task_type {task_type}", _TASK_TYPES[task_type]
    cls = (config.get("auto_mapping") or {}).get("base_model_class") or ""
    for seq2seq, names in ((True, MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES), (False, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)):
        if cls in set(names.values()):
            return cls, seq2seq
    return cls, None


def _check_base_name(config: dict, base_path: str, name: str) -> None:
    theirs = config.get("base_model_name_or_path")
    if theirs and base_path and Path(theirs).name.lower() != Path(base_path).name.lower():
        warnings.warn(f"adapter {name!r} names {theirs!r} as its base, not {Path(base_path).name!r}; "
                      "evogm goes on if its shapes fit", EvogmWarning, stacklevel=3)


def load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a .safetensors file on the CPU; a damaged file (truncated, not safetensors) is one line."""
    try:
        return load_file(str(file))
    except Exception as exc:  # noqa: BLE001 — safetensors raises its own error type for a bad file
        raise damaged(file, exc) from None


def damaged(file: Path, exc: Exception) -> EvogmError:
    """The one-line error for a weights file that cannot be read."""
    return EvogmError(f"cannot read {file}", said(exc),
                      "the file is damaged (an interrupted copy or download?): copy it again")


def check_finite(name: str, key: str, tensor: torch.Tensor) -> None:
    """Refuse a tensor holding nan or inf: every merge with it would be non-finite, whatever its λ."""
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise EvogmError(f"expert {name!r} tensor {key} holds {bad} non-finite values (nan or inf)",
                         "a merge with it is non-finite for every λ", "retrain or re-export that expert")


def _adapter_tensors(folder: Path, name: str, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """The adapter's tensors; a file without any is refused (merged, it would silently be the base)."""
    file, pickled = folder / "adapter_model.safetensors", folder / "adapter_model.bin"
    if file.exists():
        tensors = load_safetensors(file)
    elif pickled.exists() and allow_pickle:
        file, tensors = pickled, torch.load(pickled, map_location="cpu", weights_only=True)
    elif pickled.exists():
        raise EvogmError(f"adapter {name!r} has only pickled weights ({pickled.name})",
                         "pickle files can run arbitrary code when loaded",
                         "re-save it as safetensors, or pass --allow-pickle (allow_pickle: true) if you trust it")
    else:
        raise EvogmError(f"no adapter_model.safetensors in {folder}", "a PEFT adapter folder needs its weights file",
                         "point the expert at a folder saved with PEFT's save_pretrained")
    if not tensors:
        raise EvogmError(f"adapter {name!r} file {file} holds no tensors", "an adapter without factors changes nothing",
                         "re-save the adapter with PEFT's save_pretrained (an interrupted save?)")
    return tensors


@dataclass(frozen=True)
class _Pair:
    """One module's factors as the file stores them."""

    A: torch.Tensor
    B: torch.Tensor
    embedding: bool  # stored as lora_embedding_A / lora_embedding_B
    keys: dict[str, torch.Tensor]  # the file's key of each factor → the factor


def _pair_factors(tensors: dict[str, torch.Tensor], name: str) -> dict[str, _Pair]:
    """{module: its factors} from the adapter's tensor names."""
    found: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match:
            found.setdefault(match["module"], {})[match["kind"]] = (key, tensor)
        elif not key.endswith("base_layer.weight"):  # PEFT saves the base embedding alongside; not an update
            raise EvogmError(f"adapter {name!r} holds {key}", "evogm merges plain LoRA factors (lora_A / lora_B) only",
                             "merge the adapter into a full model first and pass that folder")
    pairs = {}
    for module, kinds in found.items():
        a, b = kinds.get("A", kinds.get("embedding_A")), kinds.get("B", kinds.get("embedding_B"))
        if a is None or b is None:
            raise EvogmError(f"adapter {name!r} module {module} lacks its lora_A or lora_B", "the file is incomplete",
                             "re-save the adapter with PEFT")
        pairs[module] = _Pair(A=a[1], B=b[1], embedding="embedding_A" in kinds, keys=dict((a, b)))
    return pairs
