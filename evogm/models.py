"""Load a base model and its experts (full fine-tunes or PEFT LoRA adapters) as task vectors.

A base is a causal LM (AutoModelForCausalLM) or an encoder-decoder such as T5 or BART
(AutoModelForSeq2SeqLM), told apart by its config's `is_encoder_decoder`; its experts must be of
the same kind.

An expert is kept in the form that merges fastest and exactly:
- a full fine-tune as dense task vectors τ = θ_expert − θ₀, one per parameter it changes;
- a LoRA adapter as its factors (A: r × d_in, B: d_out × r, scaling s), so that its task vector
  for a module's weight is exactly s · B @ A (never A and B weighted separately).

>>> models = load_models("zoo/base", {"add": "zoo/experts/add", "sort": "zoo/experts/sort"})  # doctest: +SKIP
>>> models.names, models.experts[0].kind                                                    # doctest: +SKIP
(['add', 'sort'], 'lora')
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from evogm.errors import EvogmError
from evogm.lora import LoraFactors, check_finite, damaged, load_safetensors, model_kind, read_adapter, said

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Expert:
    """One expert's task vector: dense deltas (full fine-tune) or LoRA factors (adapter)."""

    name: str
    kind: str  # "full" | "lora"
    path: str
    deltas: dict[str, torch.Tensor] = field(default_factory=dict)  # param name → τ (param's shape)
    factors: dict[str, LoraFactors] = field(default_factory=dict)  # param name → (A, B, s)

    @property
    def params(self) -> set[str]:
        return set(self.deltas) | set(self.factors)

    def dense(self, name: str) -> torch.Tensor | None:
        """τ for one parameter as a dense tensor (None if this expert leaves it unchanged)."""
        if name in self.deltas:
            return self.deltas[name]
        if name in self.factors:
            return self.factors[name].delta()
        return None


@dataclass
class Models:
    """The resident base model, its tokenizer, and the experts' task vectors on its device."""

    model: torch.nn.Module
    tokenizer: object
    experts: list[Expert]
    base_path: str

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.experts]


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvogmError(f"device {device!r} asked for", "no CUDA GPU is visible", "use device: cpu or auto")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None) -> torch.dtype:
    """'auto' is bfloat16 on a GPU and float32 on a CPU (bfloat16 matmuls are very slow on most CPUs)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device is not None and device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise EvogmError(f"unknown dtype {dtype!r}", f"evogm supports {', '.join(DTYPES)}", "pick one of those or auto")
    return DTYPES[dtype]


def load_models(
    base: str | Path,
    experts: dict[str, str | Path],
    *,
    dtype: str | torch.dtype = "auto",
    device: str = "auto",
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> Models:
    """Load the base onto its device and every expert's task vector next to it."""
    dev = resolve_device(device)
    model, tokenizer = load_base(base, dtype=resolve_dtype(dtype, dev), device=dev,
                                 allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    loaded = [load_expert(name, path, model, base_path=str(base), allow_pickle=allow_pickle)
              for name, path in experts.items()]
    return Models(model, tokenizer, loaded, str(base))


def load_base(path, *, dtype=torch.float32, device=torch.device("cpu"), allow_pickle=False, trust_remote_code=False):
    """The base model in eval mode on `device`, and its tokenizer (checked first: it loads in a moment)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    folder = _model_folder(path, "base model")
    check_weights(folder, allow_pickle)
    config = _check_remote_code(folder, trust_remote_code)
    auto = AutoModelForSeq2SeqLM if is_encoder_decoder(config) else AutoModelForCausalLM
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = load_tokenizer(folder, trust_remote_code)
        model = auto.from_pretrained(
            folder, dtype=dtype, use_safetensors=True if _has_safetensors(folder) else None,
            trust_remote_code=trust_remote_code)
    model.to(device).eval()
    model.requires_grad_(False)
    return model, tokenizer


def load_tokenizer(folder: Path, trust_remote_code: bool = False):
    """The base folder's tokenizer, which every command needs: to score tasks, and to save beside a merged model.

    A folder without the tokenizer's files is refused: transformers would build an empty tokenizer
    from the model type alone (Qwen2's holds 1 token) and every task would be scored on nothing. The
    files are those transformers' tokenizer class reads (its `vocab_files_names`).
    """
    from transformers import AutoTokenizer

    fix = "copy the tokenizer files of the model the base comes from (tokenizer.json, tokenizer_config.json, …) into it"
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 — transformers raises ValueError, OSError, … for a missing or bad tokenizer
        raise EvogmError(f"cannot load the tokenizer of {folder}", said(exc), fix) from None
    files = sorted(set(type(tokenizer).vocab_files_names.values()))
    if files and not any((folder / file).exists() for file in files):
        raise EvogmError(f"no tokenizer files in {folder}", f"evogm needs the base's tokenizer to score tasks and to save "
                         f"a merged model, and {type(tokenizer).__name__} reads {' or '.join(files)}", fix)
    return tokenizer


def load_expert(name: str, path, model, *, base_path: str = "", allow_pickle: bool = False) -> Expert:
    """An expert folder: a PEFT adapter (adapter_config.json) or a full fine-tune (config.json)."""
    folder = _model_folder(path, f"expert {name!r}")
    if (folder / "adapter_config.json").exists():
        _check_one_expert(name, folder)
        factors = read_adapter(folder, model, name=name, base_path=base_path, allow_pickle=allow_pickle)
        return Expert(name, "lora", str(folder), factors=factors)
    if (folder / "config.json").exists():
        return Expert(name, "full", str(folder), deltas=_full_deltas(name, folder, model, allow_pickle))
    raise EvogmError(f"expert {name!r} at {folder} is neither a PEFT adapter nor a model folder",
                     "it has no adapter_config.json and no config.json",
                     "point it at a LoRA adapter folder or a Hugging Face model folder")


def _check_one_expert(name: str, folder: Path) -> None:
    """Refuse a folder holding both a PEFT adapter and a full model's weights: either could be the expert."""
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

    full = [file for file in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)
            if (folder / file).exists()]
    if full:
        adapter = [file for file in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
                   if (folder / file).exists()]
        raise EvogmError(f"expert {name!r} folder {folder} holds both a PEFT adapter ({', '.join(adapter)}) and a full "
                         f"model's weights ({', '.join(full)})", "evogm cannot tell which of the two is the expert",
                         "put the adapter and the full model in separate folders and point the expert at the one you mean")


def _full_deltas(name: str, folder: Path, model, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """τ = θ_expert − θ₀ for every parameter the fine-tune changed, on the model's device."""
    _check_same_architecture(name, folder, model)
    params = dict(model.named_parameters())
    state = read_state_dict(folder, allow_pickle)
    unknown = sorted(set(state) - set(model.state_dict()))
    if unknown:
        raise EvogmError(f"expert {name!r} has tensors the base lacks (e.g. {unknown[0]})",
                         "it is not a fine-tune of this base", "check the expert and the base paths")
    deltas = {}
    for key, tensor in state.items():
        if key not in params:
            continue  # a buffer, or a tied copy of a parameter (e.g. lm_head.weight)
        base = params[key]
        check_finite(name, key, tensor)
        if tuple(tensor.shape) != tuple(base.shape):
            raise EvogmError(f"expert {name!r} tensor {key} has shape {tuple(tensor.shape)}, the base {tuple(base.shape)}",
                             "it was fine-tuned from another base", "use experts fine-tuned from this base")
        delta = tensor.to(device=base.device, dtype=torch.float32) - base.detach().float()
        if torch.count_nonzero(delta):
            deltas[key] = delta.to(base.dtype)
    return deltas


def read_state_dict(folder: Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder's weights (single file or shards), on the CPU."""
    files = check_weights(folder, allow_pickle)
    state = {}
    for file in files:
        if file.suffix == ".safetensors":
            state.update(load_safetensors(file))
        else:  # the user opted into pickled weights
            state.update(torch.load(file, map_location="cpu", weights_only=True))
    return state


def check_weights(folder: Path, allow_pickle: bool) -> list[Path]:
    """The weight files of a model folder; pickled ones only when the user opted in."""
    safetensors = sorted(folder.glob("*.safetensors"))
    if safetensors:
        files = [f for f in safetensors if not f.name.startswith("adapter_")] or safetensors
        for file in files:
            _check_header(file)
        return files
    pickled = sorted(f for f in folder.iterdir() if f.suffix in PICKLE_SUFFIXES)
    if pickled and not allow_pickle:
        raise EvogmError(f"{folder} holds only pickled weights ({pickled[0].name})",
                         "pickle files can run arbitrary code when loaded",
                         "convert them to safetensors, or pass --allow-pickle (allow_pickle: true) if you trust them")
    if not pickled:
        raise EvogmError(f"no weights file in {folder}", "expected *.safetensors (single file or shards)",
                         "point the path at a folder saved with save_pretrained")
    return pickled


def _check_header(file: Path) -> None:
    """Open a .safetensors file's header (cheap: no tensor is read), which also checks the file's length."""
    try:
        with safe_open(str(file), framework="pt"):
            pass
    except Exception as exc:  # noqa: BLE001 — safetensors raises its own error type for a bad file
        raise damaged(file, exc) from None


def _has_safetensors(folder: Path) -> bool:
    return any(folder.glob("*.safetensors"))


def _model_folder(path, what: str) -> Path:
    """The folder a model or an adapter is loaded from; a path to a file in it, or to nothing, is one line."""
    folder = Path(path).expanduser()
    if folder.is_file():
        raise EvogmError(f"{what} path {folder} is a file, not a folder",
                         "evogm loads a model or a PEFT adapter from the folder that holds its files",
                         f"point it at the folder (e.g. {folder.parent})")
    if not folder.is_dir():
        raise EvogmError(f"{what} folder {folder} does not exist", "evogm loads models from local folders only",
                         "check the path (a Hugging Face model folder or a PEFT adapter folder)")
    return folder


def _read_json(file: Path) -> dict:
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EvogmError(f"cannot read {file}", str(exc), "restore the file from the original model") from None


def is_encoder_decoder(config: dict) -> bool:
    """Whether a config.json describes an encoder-decoder (T5, BART, …): its own flag, else its model type."""
    if "is_encoder_decoder" in config:
        return bool(config["is_encoder_decoder"])
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES

    return config.get("model_type") in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES


def _check_remote_code(folder: Path, trust_remote_code: bool) -> dict:
    config = _read_json(folder / "config.json") if (folder / "config.json").exists() else None
    if config is None:
        raise EvogmError(f"no config.json in {folder}", "a base model folder needs one",
                         "point --base at a Hugging Face model folder")
    if config.get("auto_map") and not trust_remote_code:
        raise EvogmError(f"{folder} needs its own Python code to load (auto_map in config.json)",
                         "evogm never runs remote code unless asked",
                         "pass --trust-remote-code (trust_remote_code: true) if you trust this model")
    return config


def _check_same_architecture(name: str, folder: Path, model) -> None:
    config = _read_json(folder / "config.json")
    ours = model.config
    theirs_seq2seq, mine_seq2seq = is_encoder_decoder(config), bool(getattr(ours, "is_encoder_decoder", False))
    if theirs_seq2seq != mine_seq2seq:
        raise EvogmError(f"expert {name!r} is {model_kind(theirs_seq2seq)}, the base {model_kind(mine_seq2seq)}",
                         "experts must be fine-tuned from the base", "use experts of the base's kind")
    for key in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size",
                "d_model", "d_ff", "num_decoder_layers", "decoder_layers"):
        theirs, mine = config.get(key), getattr(ours, key, None)
        if theirs is not None and mine is not None and theirs != mine:
            raise EvogmError(f"expert {name!r} has {key}={theirs}, the base {key}={mine}",
                             "experts must be fine-tuned from the base", "use experts of the same architecture")
