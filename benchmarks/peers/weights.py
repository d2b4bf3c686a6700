"""The product model's weights as a plain Hugging Face folder for the peers' environments (config.json,
model.safetensors, tokenizer files): the very float32 tensors flowroutes traces.

`save_pretrained` refuses a model that transformers loaded from a GGUF file ("quantized with gguf and is not
serializable"), which is what `flowroutes.load_model()` returns on a machine whose model cache is still empty; the
tensors are written with safetensors instead and the config without its GGUF quantization record.
"""

from __future__ import annotations

import json
from pathlib import Path


def hf_folder(loaded, folder: Path) -> Path:
    """Write `loaded` (a flowroutes LoadedModel) into `folder` unless it already holds model.safetensors."""
    from safetensors.torch import save_model

    if (folder / "model.safetensors").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    config = loaded.model.config.to_dict()
    config.pop("quantization_config", None)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    loaded.tokenizer.save_pretrained(folder)
    save_model(loaded.model, str(folder / "model.safetensors"))  # last: its presence says the folder is whole
    return folder
