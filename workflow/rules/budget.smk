# The budget before it is spent (segflow.budget): each candidate's jobs and what they declare, and a fold's
# training time estimated from a few timed steps of its network where a training job runs (its device and
# threads), on the terminal and in budget.json. Nothing waits for it; its priority runs it once the plans exist.
rule budget:
    input:
        unpack(budget_inputs),
    output:
        RESULTS.budget,
    log:
        RESULTS.log("budget.log"),
    benchmark:
        RESULTS.benchmark("budget.tsv")
    priority: GATE_PRIORITY
    conda:
        ENV
    threads: config["train"]["threads"]
    resources:
        gpu=gpus,
        mem_mb=budget_mem,
        runtime=budget_runtime,
    params:
        dataset=DATASET.name,
        candidates=budget_candidates,
        jobs=budget_jobs,
        train=config["train"],
        folds=config["folds"],
        device=config["device"],
    script:
        "../scripts/budget.py"
