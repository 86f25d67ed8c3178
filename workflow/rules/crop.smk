# Per-case crop to the non-zero region: shapes, spacing, bounding box and foreground intensities.
for batch, cases in BATCHES.items():

    rule:
        name:
            f"crop_{batch}"
        input:
            images=[f for c in cases for f in raw_images(c)],
            labels=[raw_label(c) for c in cases],
            verified=per_case(f"{OUT}/verify/{{case}}.json", cases),
        output:
            records=per_case(f"{OUT}/crop/{{case}}.json", cases),
            foreground=per_case(f"{OUT}/crop/{{case}}_fg.npy", cases),
        log:
            f"{LOGS}/crop/{batch}.log",
        group:
            f"cases_{batch}"
        conda:
            ENV
        resources:
            mem_mb=batch_mem_mb,
        params:
            cases=cases,
            channels=DATASET.num_channels,
        script:
            "../scripts/crop.py"
