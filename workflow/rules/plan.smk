# nnU-Net's default experiment planner. A checkpoint: which configurations exist depends on the data.
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
    script:
        "../scripts/plan.py"
