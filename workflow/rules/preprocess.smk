# Per configuration x batch of cases: transpose, crop, normalise, resample, class locations.
# plans.json is an ancient() input: rewriting it with the same content reruns nothing. What matters for
# the data (spacing, normalisation, resampling, ...) is a param, so a real change reruns every case.
# One rule per data folder the plans can have (those they lack are never asked for; DATA_FOLDERS says whose
# plans make each): literal output paths keep the DAG of a large dataset fast to build (a wildcard in
# thousands of per-case outputs made every lookup of a preprocessed file scan all of them).
for folder, candidate in DATA_FOLDERS.items():
    for batch, cases in BATCHES.items():

        rule:
            name:
                f"preprocess_{folder}_{batch}"
            input:
                images=[f for c in cases for f in raw_images(c)],
                labels=[raw_label(c) for c in cases],
                plans=planned_plans(candidate),
                dataset_json=ancient(DATASET_JSON),
            output:
                data=per_case(f"{OUT}/preprocessed/{folder}/{{case}}.npy", cases),
                seg=per_case(f"{OUT}/preprocessed/{folder}/{{case}}_seg.npy", cases),
                properties=per_case(f"{OUT}/preprocessed/{folder}/{{case}}.json", cases),
            log:
                f"{LOGS}/preprocess/{folder}/{batch}.log",
            benchmark:
                f"{OUT}/benchmarks/preprocess/{folder}/{batch}.tsv"
            conda:
                ENV
            resources:
                mem_mb=lambda wildcards, input: batch_mem_mb(
                    wildcards, input, factor=60
                ),
            params:
                cases=cases,
                channels=DATASET.num_channels,
                configuration=candidate.configuration,
                signature=preprocessing_params(candidate),
            script:
                "../scripts/preprocess.py"
