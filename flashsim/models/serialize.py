"""Save / load a model as ``<path>.safetensors`` (weights) + ``<path>.json`` (config); no pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from flashsim.errors import UnitError
from flashsim.models.base import ConditionalModel, build_model

if TYPE_CHECKING:
    from flashsim.models.efficiency import EfficiencyModel

__all__ = ["save_model", "load_model", "model_paths"]

_FORMAT = "flashsim-model"


def model_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, config) paths for ``path`` given with or without a .safetensors/.json suffix."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def save_model(model: ConditionalModel | EfficiencyModel, path: str | Path) -> tuple[Path, Path]:
    """Write the weights (safetensors) and the config (JSON) of a built-in model type."""
    from safetensors.torch import save_file

    weights, meta = model_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(weights), metadata={"format": _FORMAT})
    info: dict[str, Any] = {
        "format": _FORMAT,
        "version": 1,
        "config": model.config,
        "n_targets": int(model.n_targets),
        "n_context": int(model.n_context),
    }
    meta.write_text(json.dumps(info, indent=2, sort_keys=True))
    return weights, meta


def load_model(path: str | Path, device: str | torch.device = "cpu") -> ConditionalModel | EfficiencyModel:
    """Rebuild a model from ``save_model`` output; clear errors naming a missing/corrupt file."""
    from safetensors.torch import load_file

    weights, meta = model_paths(path)
    for f in (weights, meta):
        if not f.is_file():
            raise FileNotFoundError(f"model file not found: {f}")
    try:
        info = json.loads(meta.read_text())
        config, n_targets, n_context = info["config"], info["n_targets"], info["n_context"]
    except (ValueError, KeyError, TypeError) as e:
        raise UnitError(f"cannot read model config {meta}: {e}") from e
    if info.get("format") != _FORMAT:
        raise UnitError(f"{meta} is not a flashsim model config (format={info.get('format')!r})")
    try:
        state = load_file(str(weights), device=str(device))
    except Exception as e:  # safetensors raises SafetensorError / OSError on truncation
        raise UnitError(f"cannot read model weights {weights} (corrupted or truncated?): {e}") from e
    bad = [name for name, tensor in state.items() if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise UnitError(f"model weights {weights}: tensor {bad[0]!r} holds NaN or infinity ({len(bad)} such tensors)")
    model = build_model(config, n_targets, n_context)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UnitError(f"model weights {weights} do not match config {meta}: {e}") from e
    return model.to(device)
