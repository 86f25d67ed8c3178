"""Regenerate tests/data/nnunetv2/networks.json: the state-dict names and shapes of nnU-Net v2's networks
(dynamic_network_architectures, built by nnunetv2 2.8.1's get_network_from_plans) for plans of the stored
planner fingerprints. Run it with nnunetv2's own Python, after make_planner_fixture.py:

    /path/to/nnunet-venv/bin/python tests/nnunetv2_fixture/make_network_fixture.py

For the first FORWARD_CASES networks it also writes network_outputs.npz: the deep-supervision outputs for a
seeded input with weights drawn from a seeded generator in parameter order (reproducible_weights).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_planner_fixture import DATA, nnunet_plans  # noqa: E402

#: (fingerprint case, planner, configuration): plain and residual, 3D and 2D, anisotropic kernels, a width cap
#: (a residual stage whose skip is only a pooling).
NETWORKS = [
    ("hippocampus", "default", "3d_fullres"),
    ("hippocampus", "default", "2d"),
    ("hippocampus", "resenc_m", "3d_fullres"),
    ("hippocampus", "resenc_m", "2d"),
    ("anisotropic", "resenc_m", "3d_fullres"),
    ("large", "resenc_l", "3d_lowres"),
]


FORWARD_CASES = 4  # the first records also get a forward pass with reproducible weights


def reproducible_weights(network, seed: int = 0) -> None:
    """Every parameter drawn from one seeded generator in named_parameters() order (tests/test_network.py
    draws the same), so two implementations with the same names get the same weights."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in network.named_parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)


def forward_input(architecture: dict, in_channels: int):
    """One sample of twice the smallest patch the network takes (InstanceNorm needs > 1 voxel at the bottom)."""
    import numpy as np
    import torch

    strides = np.array(architecture["arch_kwargs"]["strides"])
    shape = [2 * int(d) for d in np.prod(strides, axis=0)]
    return torch.randn([1, in_channels, *shape], generator=torch.Generator().manual_seed(1))


def described(network) -> dict:
    return {
        "state_dict": [[k, list(v.shape)] for k, v in network.state_dict().items()],
        "parameters": [[k, list(v.shape)] for k, v in network.named_parameters()],
    }


def main() -> None:
    import numpy as np
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arrays = {}
    plans_by_case = {}
    records = []
    for case_name, planner, configuration in NETWORKS:
        if case_name not in plans_by_case:
            case = json.loads((DATA / f"planner_{case_name}.json").read_text())
            plans_by_case[case_name] = (nnunet_plans(case["fingerprint"], case["dataset_json"]), case["dataset_json"])
        plans, dataset_json = plans_by_case[case_name]
        architecture = plans[planner]["configurations"][configuration]["architecture"]
        in_channels, num_classes = len(dataset_json["channel_names"]), len(dataset_json["labels"])
        network = get_network_from_plans(
            architecture["network_class_name"],
            architecture["arch_kwargs"],
            architecture["_kw_requires_import"],
            in_channels,
            num_classes,
            deep_supervision=True,
        )
        records.append(
            {
                "case": case_name,
                "planner": planner,
                "configuration": configuration,
                "in_channels": in_channels,
                "num_classes": num_classes,
                "architecture": architecture,
                **described(network),
            }
        )
        print(case_name, planner, configuration, len(records[-1]["state_dict"]))
        if len(records) <= FORWARD_CASES:
            reproducible_weights(network)
            network.eval()
            with torch.no_grad():
                outputs = network(forward_input(architecture, in_channels))
            for i, output in enumerate(outputs):
                arrays[f"{len(records) - 1}_{i}"] = output.numpy()
    out = DATA / "nnunetv2" / "networks.json"
    out.write_text(json.dumps({"source": "nnunetv2 2.8.1 get_network_from_plans", "networks": records}))
    np.savez_compressed(DATA / "nnunetv2" / "network_outputs.npz", **arrays)


if __name__ == "__main__":
    main()
