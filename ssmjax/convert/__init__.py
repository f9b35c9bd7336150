"""Checkpoint import and export between ssmjax and the PyTorch Mamba ecosystem.

Formats: mamba-ssm's ``MambaLMHeadModel`` (``"mamba_ssm"``), transformers'
``MambaForCausalLM`` (``"hf"``) and ssmjax's own (``"ssmjax"``); a directory's format is
detected from its ``config.json``.

    model, info = load_pretrained("path/to/mamba-130m")          # any of the three
    save_pretrained(model, "out/", "hf", generation=info.generation, tokenizer_dir=...)

From the shell: ``python -m ssmjax.convert SOURCE DESTINATION --to {ssmjax,hf,mamba_ssm}``.
"""

from ssmjax.convert.checkpoint import (CheckpointInfo, convert, load_params, load_pretrained,
                                       model_from_params, model_params, read_state_dict,
                                       save_pretrained)
from ssmjax.convert.configs import (FORMATS, ConversionError, config_from_dict, config_to_dict,
                                    detect_format)
from ssmjax.convert.host_params import random_params
from ssmjax.convert.tensors import params_to_state_dict, state_dict_to_params, tensor_specs

__all__ = ["FORMATS", "CheckpointInfo", "ConversionError", "config_from_dict", "config_to_dict",
           "convert", "detect_format", "load_params", "load_pretrained", "model_from_params",
           "model_params", "params_to_state_dict", "random_params", "read_state_dict", "save_pretrained",
           "state_dict_to_params", "tensor_specs"]
