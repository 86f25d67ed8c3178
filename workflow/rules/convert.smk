# MSD Task folder -> nnU-Net v2 raw layout, one job per batch of cases. v2 raw folders skip this stage.
if DATASET.kind == "msd":

    localrules:
        convert_dataset_json,

    rule convert_dataset_json:
        input:
            str(DATASET.root / "dataset.json"),
        output:
            DATASET_JSON,
        log:
            RESULTS.log("convert/dataset_json.log"),
        conda:
            ENV
        params:
            labels=config["labels"],
            regions_class_order=config["regions_class_order"],
        script:
            "../scripts/convert_dataset_json.py"

    for batch, cases in BATCHES.items():

        rule:
            name:
                f"convert_{batch}"
            input:
                images=[str(DATASET.sources[c][0]) for c in cases],
                labels=[str(DATASET.label_sources[c]) for c in cases],
            output:
                images=[f for c in cases for f in raw_images(c)],
                labels=[raw_label(c) for c in cases],
            log:
                RESULTS.log(f"convert/{batch}.log"),
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
                "../scripts/convert.py"
