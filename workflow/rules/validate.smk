# Per (candidate, fold): the fold's validation cases predicted from their preprocessed arrays with the
# final weights, exported to the original geometry and evaluated (summary.json, per_case.csv).
rule validate:
    input:
        unpack(validation_inputs),
    output:
        directory(RESULTS.validation("{candidate}", "{fold}")),
    log:
        RESULTS.log("validate/{candidate}/fold_{fold}.log"),
    benchmark:
        RESULTS.benchmark("validate/{candidate}/fold_{fold}.tsv")
    wildcard_constraints:
        candidate=CANDIDATE_PATTERN,
        fold="[0-9]+",
    conda:
        ENV
    threads: config["inference"]["threads"]
    resources:
        gpu=gpus,
        mem_mb=inference_mem,
        runtime=config["inference"]["runtime_minutes"],
    params:
        device=config["device"],
        preprocessed=RESULTS.preprocessed,
        configuration=configuration_of,
        labels_dir=raw_labels_dir,
        with_probabilities=keeps_probabilities,
        tolerance=config["surface_tolerance_mm"],
        next_stage=next_stage_param,
        mirror=config["inference"]["mirror"],
        step=config["inference"]["step_size"],
    script:
        "../scripts/validate.py"
