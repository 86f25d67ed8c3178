# One job per (candidate, fold): nnU-Net's trainer, resumable. The resumable checkpoint
# (checkpoint_latest.pt) is not a declared output, so a failed, killed or requeued job continues from it.
rule train:
    input:
        unpack(training_inputs),
    output:
        final=RESULTS.checkpoint("{candidate}", "{fold}"),
        progress=report(
            RESULTS.progress("{candidate}", "{fold}"),
            caption="../report/progress.rst",
            category="3. Training",
            subcategory="{candidate}",
            labels={"candidate": "{candidate}", "fold": "{fold}"},
        ),
    log:
        RESULTS.log("train/{candidate}/fold_{fold}.log"),
    benchmark:
        RESULTS.benchmark("train/{candidate}/fold_{fold}.tsv")
    wildcard_constraints:
        candidate=CANDIDATE_PATTERN,
        fold="[0-9]+|all",
    conda:
        ENV
    threads: config["train"]["threads"]
    resources:
        gpu=gpus,
        mem_mb=training_mem,
        runtime=config["train"]["runtime_minutes"],
    params:
        signature=training_params,
        settings=config["train"],
        device=config["device"],
        preprocessed=RESULTS.preprocessed,
        configuration=configuration_of,
    script:
        "../scripts/train.py"
