"""PEFT LoRA adapters as exact task vectors, kept factored.

For a module with factors A (r × d_in), B (d_out × r) and scaling s, PEFT's update of the module's
weight is exactly s · B @ A (embeddings and fan-in-fan-out layers store it transposed). evogm keeps
the factors and merges them as such; it never weights A and B separately.

>>> import torch
>>> f = LoraFactors(A=torch.ones(2, 3), B=torch.ones(4, 2), scaling=0.5)
>>> f.delta().shape, float(f.delta()[0, 0])
(torch.Size([4, 3]), 1.0)
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from evogm.errors import EvogmError

# base_model.model.<module>.lora_A[.<adapter>].weight  |  <module>.lora_embedding_B[.<adapter>]
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+?)\.lora_(?P<kind>A|B|embedding_A|embedding_B)(?:\.(?!weight$)[^.]+)?(?:\.weight)?$")


# adapter_config.json keys whose effect evogm reproduces exactly (or that do not change the update)
APPLIED = {
    "r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern",  # the scaling (ranks from the tensors)
    "fan_in_fan_out",  # factors stored transposed
    "target_modules", "exclude_modules", "layers_to_transform", "layers_pattern",  # which modules: the file's tensors say
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


class EvogmWarning(UserWarning):
    """Something the user should know that does not stop the run."""


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
    """{base parameter name: LoraFactors} for every module the adapter changes, on the model's device."""
    config = _adapter_config(folder, name)
    _check_base_name(config, base_path, name)
    _check_task_type(config, model, name)
    tensors = _adapter_tensors(folder, name, allow_pickle)
    pairs = _pair_factors(tensors, name)
    params = dict(model.named_parameters())
    factors = {}
    for module, (a, b, embedding) in pairs.items():
        param = params.get(f"{module}.weight")
        if param is None:
            raise EvogmError(f"adapter {name!r} targets {module}, which the base lacks",
                             "the adapter was made for another architecture", "use an adapter trained on this base")
        if embedding or config.get("fan_in_fan_out"):  # PEFT stores these transposed
            a, b = b.T, a.T
        if (b.shape[0], a.shape[1]) != tuple(param.shape):
            raise EvogmError(f"adapter {name!r} module {module} makes a {b.shape[0]}×{a.shape[1]} update, the base weight is "
                             f"{tuple(param.shape)}", "the adapter was made for another base", "use an adapter of this base")
        scale = _scaling(config, module, a.shape[0])
        # float32 at least: a bfloat16 model's merge then rounds once, at the end (Merger)
        cast = dict(device=param.device, dtype=torch.promote_types(param.dtype, torch.float32))
        factors[f"{module}.weight"] = LoraFactors(A=a.to(**cast).contiguous(), B=b.to(**cast).contiguous(), scaling=scale)
    return factors


def _adapter_config(folder: Path, name: str) -> dict:
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EvogmError(f"cannot read {folder / 'adapter_config.json'}", str(exc), "re-save the adapter with PEFT") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise EvogmError(f"expert {name!r} is a {config['peft_type']} adapter", "evogm merges LoRA adapters and full fine-tunes",
                         "use a LoRA adapter")
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
    return EvogmError(f"cannot read {file}", f"{type(exc).__name__}: {exc}",
                      "the file is damaged (an interrupted copy or download?): copy it again")


def check_finite(name: str, key: str, tensor: torch.Tensor) -> None:
    """Refuse a tensor holding nan or inf: every merge with it would be non-finite, whatever its λ."""
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise EvogmError(f"expert {name!r} tensor {key} holds {bad} non-finite values (nan or inf)",
                         "a merge with it is non-finite for every λ", "retrain or re-export that expert")


def _adapter_tensors(folder: Path, name: str, allow_pickle: bool) -> dict[str, torch.Tensor]:
    file = folder / "adapter_model.safetensors"
    if file.exists():
        return load_safetensors(file)
    pickled = folder / "adapter_model.bin"
    if pickled.exists() and allow_pickle:
        return torch.load(pickled, map_location="cpu", weights_only=True)
    if pickled.exists():
        raise EvogmError(f"adapter {name!r} has only pickled weights ({pickled.name})",
                         "pickle files can run arbitrary code when loaded",
                         "re-save it as safetensors, or pass --allow-pickle (allow_pickle: true) if you trust it")
    raise EvogmError(f"no adapter_model.safetensors in {folder}", "a PEFT adapter folder needs its weights file",
                     "point the expert at a folder saved with PEFT's save_pretrained")


def _pair_factors(tensors: dict[str, torch.Tensor], name: str) -> dict[str, tuple[torch.Tensor, torch.Tensor, bool]]:
    """{module: (A, B, is_embedding)} from the adapter's tensor names."""
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match:
            check_finite(name, key, tensor)
            found.setdefault(match["module"], {})[match["kind"]] = tensor
        elif not key.endswith("base_layer.weight"):  # PEFT saves the base embedding alongside; not an update
            raise EvogmError(f"adapter {name!r} holds {key}", "evogm merges plain LoRA factors (lora_A / lora_B) only",
                             "merge the adapter into a full model first and pass that folder")
    pairs = {}
    for module, kinds in found.items():
        a, b = kinds.get("A", kinds.get("embedding_A")), kinds.get("B", kinds.get("embedding_B"))
        if a is None or b is None:
            raise EvogmError(f"adapter {name!r} module {module} lacks its lora_A or lora_B", "the file is incomplete",
                             "re-save the adapter with PEFT")
        pairs[module] = (a, b, "embedding_A" in kinds)
    return pairs


def _scaling(config: dict, module: str, rank: int) -> float:
    """PEFT's scaling for one module: alpha / r, or alpha / √r with rank-stabilized LoRA."""
    alpha = _pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", 8))
    if config.get("use_rslora"):
        return alpha / rank**0.5
    return alpha / rank


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's rule: a pattern key applies when the module name ends with it (regex, dot-separated)."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default
