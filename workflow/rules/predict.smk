# The images to predict (config `test_images`) through the selected model, one job per batch of cases
# (MSD images are converted to the raw layout first, like the training images):
# preprocessing as in training, sliding window over the selected folds, ensemble, postprocessing.
from segflow.batches import per_case

if DATASET.kind == "msd":
    for batch, cases in TEST_BATCHES.items():

        rule:
            name:
                f"convert_test_{batch}"
            input:
                images=[str(TEST[c][0]) for c in cases],
            output:
                images=[f for c in cases for f in test_images(c)],
            log:
                RESULTS.log(f"convert_test/{batch}.log"),
            conda:
                ENV
            params:
                cases=cases,
                channels=DATASET.num_channels,
            script:
                "../scripts/convert.py"


for batch, cases in TEST_BATCHES.items():

    rule:
        name:
            f"predict_{batch}"
        input:
            images=[f for c in cases for f in test_images(c)],
            selection=RESULTS.selection,
            verify_report=ancient(RESULTS.verify_report),
            dataset_json=RESULTS.dataset_json,
            plans=prediction_plans,
            checkpoints=prediction_checkpoints,
        output:
            per_case(RESULTS.prediction("{case}", DATASET.file_ending), cases),
        log:
            RESULTS.log(f"predict/{batch}.log"),
        benchmark:
            RESULTS.benchmark(f"predict/{batch}.tsv")
        conda:
            ENV
        threads: config["inference"]["threads"]
        resources:
            gpu=gpus,
            mem_mb=inference_mem,
            runtime=config["inference"]["runtime_minutes"],
        params:
            cases=cases,
            channels=DATASET.num_channels,
            device=config["device"],
            mirror=config["inference"]["mirror"],
            step=config["inference"]["step_size"],
            model=results_dir,
        script:
            "../scripts/predict.py"
