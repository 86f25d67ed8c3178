# nnU-Net's default experiment planner (plans.json), and the residual-encoder presets the config names
# (plans_<planner>.json). Checkpoints: which configurations exist depends on the data.
checkpoint plan:
    input:
        fingerprint=f"{OUT}/fingerprint.json",
        dataset_json=DATASET_JSON,
    output:
        plans=f"{OUT}/plans.json",
    log:
        f"{LOGS}/plan.log",
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
        fingerprint=f"{OUT}/fingerprint.json",
        dataset_json=DATASET_JSON,
    output:
        plans=f"{OUT}/plans_{{planner}}.json",
    log:
        f"{LOGS}/plan_{{planner}}.log",
    wildcard_constraints:
        planner="|".join(p for p in PLANNERS if p != DEFAULT_PLANNER),
    conda:
        ENV
    params:
        gpu_memory_target_gb=None,
        name=DATASET.name,
        planner=lambda wildcards: wildcards.planner,
    script:
        "../scripts/plan.py"
