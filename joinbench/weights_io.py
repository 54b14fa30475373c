"""Loading exported weights safely: sha256 first, then every key and shape, then the load.

Shared by the GAN priors and the U-Net baseline, whose exports are fp16 safetensors with a
JSON sidecar recording each file's sha256. Every problem is one line of ``error_cls``
naming the file and what to do.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .env import sha256_file
from .errors import JoinbenchError


def _fix(file: Path) -> str:
    """How to repair a bad weights file: a shipped one is restored, a user's own re-exported."""
    shipped = Path(__file__).resolve().parent / "weights"
    if shipped in file.resolve().parents:
        return "restore the shipped file (`git checkout -- joinbench/weights` in a clone, or reinstall joinbench)"
    return "re-export it (or copy it again)"


def load_checked(module: torch.nn.Module, file: Path, expected_sha: str | None, sidecar: Path,
                 error_cls: type[JoinbenchError], missing_hint: str) -> None:
    """Hash check, then key and shape checks against ``module``, then load (upcast to float32).

    ``missing_hint`` completes "FILE does not exist; ..." with how to get the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not file.is_file():
        raise error_cls(f"{file} does not exist; {missing_hint}.")
    found = sha256_file(file)
    if expected_sha != found:
        raise error_cls(f"{file}: sha256 {found} does not match {expected_sha} recorded in {sidecar.name}; "
                        f"the file is corrupt or belongs to another export: {_fix(file)}.")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise error_cls(f"{file}: unreadable safetensors file ({exc}); {_fix(file)}.") from None
    expected = module.state_dict()
    missing = [k for k in expected if k not in tensors]
    extra = [k for k in tensors if k not in expected]
    if missing or extra:
        what = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        more = " ..." if len(missing or extra) > 3 else ""
        raise error_cls(f"{file}: tensors do not fit the network in {sidecar.name} ({what}{more}).")
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise error_cls(f"{file}: tensor {k} has shape {tuple(tensors[k].shape)}, expected {tuple(v.shape)} "
                            f"from the network in {sidecar.name}.")
    module.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
