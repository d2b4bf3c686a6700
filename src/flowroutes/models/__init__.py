"""Model loading and the registry of per-family adapters.

`load_model` turns whatever the user has (nothing, a hub id, a folder, a .gguf, a loaded model)
into a `LoadedModel`; `adapter_for` picks the family adapter. No maths here.
"""

from __future__ import annotations

from .base import Adapter, BlockModules, OVWeights
from .gpt import BloomAdapter, FalconAdapter, GPT2Adapter, GPTJAdapter, GPTNeoAdapter, GPTNeoXAdapter, OPTAdapter
from .llama import Gemma2Adapter, LlamaAdapter, MixtralAdapter, Olmo2Adapter, Phi3Adapter, PhiAdapter, StableLmAdapter
from .loading import LoadedModel, embedded_gguf_path, load_model

ADAPTERS: tuple[type[Adapter], ...] = (
    LlamaAdapter, MixtralAdapter, Gemma2Adapter, Olmo2Adapter, StableLmAdapter, PhiAdapter, Phi3Adapter,
    GPT2Adapter, GPTNeoAdapter, GPTJAdapter, GPTNeoXAdapter, OPTAdapter, BloomAdapter, FalconAdapter,
)


def supported_model_types() -> list[str]:
    return sorted(t for a in ADAPTERS for t in a.model_types)


def adapter_class(model_type: str) -> type[Adapter] | None:
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    return None


__all__ = [
    "ADAPTERS",
    "Adapter",
    "BlockModules",
    "LoadedModel",
    "OVWeights",
    "adapter_class",
    "embedded_gguf_path",
    "load_model",
    "supported_model_types",
]
