# The built-in synthetic demo dataset (config `dataset: demo`).
if config["dataset"] == "demo":
    DEMO_FILES = demo.demo_files(
        config["demo"]["path"], config["demo"]["cases"], config["demo"]["test_cases"]
    )

    localrules:
        demo_dataset,

    rule demo_dataset:
        output:
            dataset_json=DEMO_FILES["dataset_json"],
            images=DEMO_FILES["images"],
            labels=DEMO_FILES["labels"],
            test_images=DEMO_FILES["test_images"],
        log:
            RESULTS.log("demo_dataset.log"),
        conda:
            ENV
        params:
            root=lambda wildcards, output: str(Path(output.dataset_json[0]).parent),
            settings=config["demo"],
        script:
            "../scripts/demo_dataset.py"
