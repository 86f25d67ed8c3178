from pathlib import Path

from segflow.io import copy_file
from segflow.jobs import run_job
from segflow.select import select, write_config

sm = snakemake  # noqa: F821 (injected by Snakemake)
candidates = sm.params.candidates
run_job(
    sm.log[0],
    select,
    dict(zip(candidates["configurations"], sm.input.summaries, strict=True)),
    {tuple(pair): folder for pair, folder in zip(candidates["pairs"], sm.input.ensembles, strict=True)},
    candidates["validation"],
    sm.input.dataset_json,
    sm.params.labels_dir,
    sm.params.folds,
    sm.params.results,
    Path(sm.output.selection),
    sm.params.test_images,
)
copy_file(sm.input.dataset_json, sm.output.dataset_json)
write_config(sm.config, sm.output.config)
