# Per-case integrity checks (errors stop the run; warnings go to verify_report.json).
for batch, cases in BATCHES.items():

    rule:
        name:
            f"verify_{batch}"
        input:
            images=[f for c in cases for f in raw_images(c)],
            labels=[raw_label(c) for c in cases],
            dataset_json=ancient(DATASET_JSON),
        output:
            manifest=RESULTS.batch_manifest("verify", batch),
        log:
            RESULTS.log(f"verify/{batch}.log"),
        group:
            f"cases_{batch}"
        conda:
            ENV
        resources:
            mem_mb=batch_mem_mb,
        params:
            cases=cases,
            channels=DATASET.num_channels,
            dataset=dataset_json_signature(),
            outputs=case_files(RESULTS.records("verify"), records=".json"),
        script:
            "../scripts/verify.py"


rule verify_report:
    input:
        batch_manifests("verify"),
    output:
        RESULTS.verify_report,
    log:
        RESULTS.log("verify/report.log"),
    conda:
        ENV
    script:
        "../scripts/verify_report.py"
