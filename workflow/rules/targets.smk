# What the run makes: the files `rule all` and the stage targets (preprocessing, training, crossvalidation,
# prediction) ask for, as segflow.layout names them.
from segflow import layout


def preprocessed_data(folder):
    """Every case of a preprocessed data folder, as its batches' manifests."""
    return batch_manifests(f"preprocessed/{folder}")


def preprocessed_targets():
    folders = dict.fromkeys(data_folder_of(c) for c in selected_candidates())
    return [f for folder in folders for f in preprocessed_data(folder)]


STATIC_TARGETS = (
    [
        RESULTS.verify_report,
        RESULTS.fingerprint,
        RESULTS.plans(),
        RESULTS.budget,
        RESULTS.splits,
    ]
    + [RESULTS.plans(p) for p in PRESETS]
    + [RESULTS.plans(p, n) for p, n in NETWORK_PLANS.values()]
)


def training_targets():
    return layout.training_targets(RESULTS, candidate_names(), config["folds"])


def validation_dirs(name):
    return layout.validation_dirs(RESULTS, name, CV_FOLDS)


def ensemble_pairs():
    return layout.ensemble_pairs(candidate_names())


def ensemble_dirs():
    return layout.ensemble_dirs(RESULTS, candidate_names())


def crossval_summaries():
    return layout.crossval_summaries(RESULTS, candidate_names())


def crossvalidation_targets():
    """Cross-validation of each trained candidate and ensemble, and the selection."""
    return layout.crossvalidation_targets(RESULTS, candidate_names(), CV_FOLDS)


def prediction_targets():
    return layout.prediction_targets(RESULTS, TEST, DATASET.file_ending)


def evaluation_targets():
    """Cross-validation, the selection and the test predictions."""
    return crossvalidation_targets() + prediction_targets()


# The test images the report shows (the first few, sorted).
OVERLAY_TEST_CASES = sorted(TEST)[:3]


def report_targets():
    """The report's tables and overlays: the outputs of the rules in report.smk."""
    if not CV_FOLDS:
        return []
    reports = (rules.report_tables, rules.report_overlays)
    return [str(f) for rule in reports for f in rule.output]


def planned_targets(wildcards):
    """Targets that exist only once the plans say which configurations there are."""
    return (
        preprocessed_targets()
        + training_targets()
        + evaluation_targets()
        + report_targets()
    )
