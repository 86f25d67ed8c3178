"""Starting a training from pretrained weights (``train.pretrained_weights``), as nnU-Net's ``-pretrained_weights``.

The checkpoint is segflow's (``checkpoint_final.pt``) or nnU-Net v2's (``checkpoint_final.pth``): both keep the
state dict under ``network_weights`` with the same parameter names, and both are read with
``torch.load(weights_only=True)`` (segflow/io.py). Every parameter of the network must be in the checkpoint with
its shape, except the segmentation heads (``seg_layers``), which keep their fresh initialisation when the label
count differs (nnU-Net reinitialises them always; segflow keeps them when they fit, for fine-tuning on the same
labels). Parameters of the checkpoint that the network lacks are ignored, as nnU-Net does.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from segflow.errors import InputError
from segflow.io import load_checkpoint

HEAD = ".seg_layers."


def weights_digest(state: dict) -> str:
    """SHA-256 over a state dict's names and tensor bytes, in its order: equal digests, equal weights."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def misfits(own: dict, weights: dict) -> tuple[list[str], list[str]]:
    """Parameters (heads aside) the checkpoint lacks, and those it holds with another shape."""
    body = [k for k in own if HEAD not in k]
    missing = [k for k in body if k not in weights]
    reshaped = [
        f"{k}: {list(weights[k].shape)} for {list(own[k].shape)}"
        for k in body
        if k in weights and weights[k].shape != own[k].shape
    ]
    return missing, reshaped


def load_pretrained(network: torch.nn.Module, path) -> dict:
    """Load the weights of checkpoint ``path`` into ``network``; returns what was done (for pretrained.json)."""
    path = Path(path)
    checkpoint = load_checkpoint(path, mapped=True)
    weights = checkpoint.get("network_weights")
    if not isinstance(weights, dict):
        raise InputError("has no network_weights.", file=path, fix="give a segflow or nnU-Net v2 fold checkpoint.")
    own = network.state_dict()
    missing, reshaped = misfits(own, weights)
    if missing or reshaped:
        first = (missing or reshaped)[0]
        raise InputError(
            f"does not fit this plan's network: {len(missing)} parameters missing, {len(reshaped)} of another shape "
            f"(first: {first}).",
            file=path,
            fix="pretrain with the same plans and input channels (for nnU-Net: move the plans between datasets "
            "with nnUNetv2_move_plans_between_datasets); only the segmentation heads may differ.",
        )
    skipped = [k for k in own if HEAD in k and (k not in weights or weights[k].shape != own[k].shape)]
    network.load_state_dict({k: own[k] if k in skipped else weights[k] for k in own})
    return {
        "source": str(path.resolve()),
        "framework": "nnU-Net v2" if "trainer_name" in checkpoint else "segflow",
        "loaded": len(own) - len(skipped),
        "skipped_heads": skipped,
        "weights_sha256": weights_digest(network.state_dict()),
    }
