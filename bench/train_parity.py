"""Check: segflow's network, loss and optimiser step equal nnunetv2 2.8.1's, given the same weights and batches.

Runs in nnunetv2's Python (it imports both). nnunetv2's trainer is built on the Hippocampus 3d_fullres plan in
nnunetv2's preprocessed folder; segflow's network gets nnunetv2's initial weights; both then take the same
``--steps`` augmented batches from nnunetv2's loader, each with its own loss, SGD and gradient clipping.
Printed per step: both losses and gradient norms (they agree to float precision on CPU).

Usage: /opt/nnunet-venv/bin/python bench/train_parity.py --nnunet-base /tmp/segflow-bench-train-quality/nnunetv2
(the folder bench/train_quality.py fills)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nnunet-base", type=Path, default=Path("/tmp/segflow-bench-train-quality/nnunetv2"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    base = args.nnunet_base
    os.environ.update(
        nnUNet_raw=str(base / "raw"),
        nnUNet_preprocessed=str(base / "preprocessed"),
        nnUNet_results=str(base / "parity_results"),
        nnUNet_compile="False",
        nnUNet_n_proc_DA="0",
    )
    sys.path.insert(0, str(REPO))
    import json

    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from segflow.networks import build_network
    from segflow.train.loss import DeepSupervisionLoss, DiceCELoss, deep_supervision_weights

    torch.set_num_threads(args.threads)
    folder = base / "preprocessed" / "Dataset004_Hippocampus"
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    plans["continue_training"] = False
    trainer = nnUNetTrainer(plans, "3d_fullres", 0, dataset_json, device=torch.device("cpu"))
    trainer.on_train_start()
    configuration = plans["configurations"]["3d_fullres"]
    network = build_network(configuration, 1, len(dataset_json["labels"]))
    network.load_state_dict(trainer.network.state_dict())  # the same names: no mapping
    n_outputs = len(configuration["architecture"]["arch_kwargs"]["strides"]) - 1
    loss = DeepSupervisionLoss(DiceCELoss(configuration["batch_dice"]), deep_supervision_weights(n_outputs))
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    sides = (("nnunetv2", trainer.network, trainer.loss, trainer.optimizer), ("segflow", network, loss, optimizer))
    for step in range(args.steps):
        batch = next(trainer.dataloader_train)
        line = []
        for name, net, criterion, opt in sides:
            net.train()
            opt.zero_grad(set_to_none=True)
            value = criterion(net(batch["data"]), batch["target"])
            value.backward()
            norm = torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
            opt.step()
            line.append(f"{name} loss {float(value):.7f} grad norm {float(norm):.6f}")
        print(f"step {step}: " + " | ".join(line), flush=True)
    if hasattr(trainer.dataloader_train, "_finish"):
        trainer.dataloader_train._finish()


if __name__ == "__main__":
    main()
