# nnU-Net's default experiment planner (plans.json), and the residual-encoder presets the config names
# (plans_<planner>.json). Checkpoints: which configurations exist depends on the data.
from segflow.plan import PLANNERS


checkpoint plan:
    input:
        fingerprint=RESULTS.fingerprint,
        dataset_json=DATASET_JSON,
        # the verification's warnings, which `snakemake plan` would otherwise leave unwritten
        verify_report=ancient(RESULTS.verify_report),
    output:
        plans=RESULTS.plans(),
    log:
        RESULTS.log("plan.log"),
    priority: GATE_PRIORITY
    conda:
        ENV
    params:
        gpu_memory_target_gb=config["gpu_memory_target_gb"],
        name=DATASET.name,
        planner=DEFAULT_PLANNER,
    script:
        "../scripts/plan.py"


# A preset plans for the GPU memory it is tuned to (plan.PLANNERS), as nnunetv2's -pl does.
checkpoint plan_preset:
    input:
        fingerprint=RESULTS.fingerprint,
        dataset_json=DATASET_JSON,
    output:
        plans=RESULTS.plans("{planner}"),
    log:
        RESULTS.log("plan_{planner}.log"),
    wildcard_constraints:
        planner="|".join(p for p in PLANNERS if p != DEFAULT_PLANNER),
    priority: GATE_PRIORITY
    conda:
        ENV
    params:
        gpu_memory_target_gb=None,
        name=DATASET.name,
        planner=lambda wildcards: wildcards.planner,
    script:
        "../scripts/plan.py"


# A planner's plans with another network of the config's `networks` (segflow.networks.with_network): the
# same data, patches and batches; not a checkpoint, as its configurations are its planner's.
rule network_plans:
    input:
        plans=lambda wildcards: plans_json(NETWORK_PLANS[wildcards.stem][0]),
    output:
        plans=RESULTS.path("plans_{stem}.json"),
    log:
        RESULTS.log("plans_{stem}.log"),
    wildcard_constraints:
        stem="|".join(NETWORK_PLANS) or "no-network-plans",
    priority: GATE_PRIORITY
    conda:
        ENV
    params:
        network=lambda wildcards: NETWORK_PLANS[wildcards.stem][1],
    script:
        "../scripts/network_plans.py"
