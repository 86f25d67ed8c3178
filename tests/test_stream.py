"""Cases streamed through a prediction (segflow/stream.py): the next case prepared while the current one is
worked on, the last one finished behind it, at most one of each in flight, in order, errors not lost."""

import threading
import time
import weakref

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import load

import segflow.predict
import segflow.validate
from segflow.infer import Predictor, SlidingWindow
from segflow.predict import predict_cases
from segflow.stream import Stream, overlaps
from segflow.validate import validate_fold

DEMO = "Task900_SegflowDemo"


def test_the_next_case_is_prepared_while_the_current_one_is_worked_on():
    """Case 1's preparation runs during case 0's work: case 0's work waits for it (a sequential stream would
    wait forever; the timeout makes that a failure)."""
    prepared_one = threading.Event()

    def prepare(case):
        if case == 1:
            prepared_one.set()
        return case

    with Stream(prepare, range(3)) as stream:
        for case in stream.cases:
            if case == 0:
                assert prepared_one.wait(timeout=30), "case 1 was not prepared beside case 0"


def test_one_case_ahead_one_behind_and_finished_in_order():
    events = []

    def finish(case):
        time.sleep(0.05)  # slower than the work: a stream that did not wait would run ahead of its finishes
        events.append(("finish", case))

    with Stream(lambda case: events.append(("prepare", case)) or case, range(6)) as stream:
        for case in stream.cases:
            events.append(("work", case))
            stream.finish(finish, case)
    position = {event: index for index, event in enumerate(events)}
    assert [case for kind, case in events if kind == "finish"] == list(range(6))
    assert [case for kind, case in events if kind == "work"] == list(range(6))
    for case in range(4):
        assert position["prepare", case + 2] > position["work", case]  # never two cases ahead
        assert position["finish", case] < position["work", case + 2]  # never two cases behind
    assert set(position) == {(kind, case) for kind in ("prepare", "work", "finish") for case in range(6)}


def test_an_error_behind_or_ahead_reaches_the_caller():
    def fail_on_two(case):
        if case == 2:
            raise ValueError(f"case {case} cannot be written")

    with pytest.raises(ValueError, match="case 2 cannot be written"):
        with Stream(lambda case: case, range(3)) as stream:
            for case in stream.cases:
                stream.finish(fail_on_two, case)

    def unreadable(case):
        if case == 1:
            raise OSError("case 1 cannot be read")
        return case

    worked = []
    with pytest.raises(OSError, match="case 1 cannot be read"):
        with Stream(unreadable, range(3)) as stream:
            for case in stream.cases:
                worked.append(case)
    assert worked == [0]


def test_a_case_is_let_go_once_the_caller_is_done_with_it():
    """At most one case ahead is held: the stream keeps no reference to a case it handed over (a held case
    would keep its arrays in memory beside the next ones)."""

    class Case:
        pass

    handed = []
    with Stream(lambda index: Case(), range(3)) as stream:
        for case in stream.cases:
            handed.append(weakref.ref(case))
            del case
            assert handed[-1]() is None, "the stream still holds the case it handed over"


def test_without_overlap_each_case_is_prepared_worked_on_and_finished_in_turn_in_one_thread():
    """Where the network runs on a CPU (its threads already busy), the steps run one case at a time."""
    events = []

    def step(kind):
        return lambda case: events.append((kind, case, threading.current_thread().name)) or case

    with Stream(step("prepare"), range(3), overlap=False) as stream:
        for case in stream.cases:
            events.append(("work", case, threading.current_thread().name))
            stream.finish(step("finish"), case)
    assert [(kind, case) for kind, case, _ in events] == [
        (kind, case) for case in range(3) for kind in ("prepare", "work", "finish")
    ]
    assert {thread for *_, thread in events} == {threading.current_thread().name}
    assert overlaps(torch.device("cuda")) and not overlaps(torch.device("cpu")) and not overlaps("cpu")
    assert overlaps("cpu", asked=True) and not overlaps(torch.device("cuda"), asked=False)


def labels(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def network_calls(monkeypatch, before_each=lambda call: None) -> list[int]:
    """Count ``Predictor.predict`` calls (one per case and model), calling ``before_each(call number)`` first."""
    calls = []
    predict = Predictor.predict

    def counted(self, data):
        before_each(len(calls))
        calls.append(threading.current_thread().name)
        return predict(self, data)

    monkeypatch.setattr(Predictor, "predict", counted)
    return calls


def test_segflow_predict_reads_the_next_case_while_the_network_runs_and_writes_the_same_label_maps(
    demo_run, tmp_path, monkeypatch
):
    """The demo's selection (2d, one member) streamed: the network waits on case 0 until case 1 is being read
    (a prediction that read only after exporting would never get there), exports run in their own thread, and
    the label maps are the run's predict job's."""
    out = demo_run / "results" / DEMO
    names = sorted({path.name[: -len("_0000.nii.gz")] for path in (out / "raw" / "imagesTs").glob("*.nii.gz")})
    images = [sorted((out / "raw" / "imagesTs").glob(f"{name}_*.nii.gz")) for name in names]
    second_read, exports = threading.Event(), []
    read_case, export_logits = segflow.predict.read_case, segflow.predict.export_logits

    def reading(files, *args):
        if list(files) == images[1]:
            second_read.set()
        return read_case(files, *args)

    def exporting(*args):
        exports.append(threading.current_thread().name)
        return export_logits(*args)

    def wait_for_the_second_read(call: int) -> None:
        if call == 0:
            assert second_read.wait(timeout=60), "case 1 was not read while the network ran on case 0"

    monkeypatch.setattr(segflow.predict, "read_case", reading)
    monkeypatch.setattr(segflow.predict, "export_logits", exporting)
    calls = network_calls(monkeypatch, wait_for_the_second_read)
    names = [f"{name}.nii.gz" for name in names]
    window = SlidingWindow(step=0.5, mirror=True)  # the demo run's inference settings
    selection = load(out / "selection.json")
    predict_cases(images, [tmp_path / n for n in names], out, selection, "cpu", window, stream=True)
    assert len(calls) == len(images)  # one call per case: it averages the folds itself
    assert exports and set(exports) == {"segflow-export_0"}
    for name in names:
        np.testing.assert_array_equal(labels(tmp_path / name), labels(out / "predictions" / name))


def test_validation_exports_a_case_while_the_network_runs_on_the_next(demo_run, tmp_path, monkeypatch):
    """2d fold 0 of the demo validated again: case 0's export waits until the network has started on case 1,
    and the files (label maps, probabilities, summary) are those the run's validation job wrote."""
    out = demo_run / "results" / DEMO
    second_network = threading.Event()
    export_prediction = segflow.validate.export_prediction

    def exporting(*args):
        if not second_network.is_set():
            assert second_network.wait(timeout=60), "case 0 was exported before the network ran on case 1"
        return export_prediction(*args)

    monkeypatch.setattr(segflow.validate, "export_prediction", exporting)
    network_calls(monkeypatch, lambda call: second_network.set() if call == 1 else None)
    fold = out / "train" / "2d" / "fold_0"
    validate_fold(
        out / "plans.json",
        out / "dataset.json",
        out / "splits.json",
        out / "preprocessed",
        "2d",
        0,
        fold / "checkpoint_final.pt",
        out / "raw" / "labelsTr",
        tmp_path,
        device="cpu",
        with_probabilities=True,
        window=SlidingWindow(step=0.5, mirror=True),
        stream=True,
    )
    cases = load(out / "splits.json")[0]["val"]
    assert len(cases) >= 2
    for case in cases:
        np.testing.assert_array_equal(
            labels(tmp_path / f"{case}.nii.gz"), labels(fold / "validation" / f"{case}.nii.gz")
        )
        with np.load(tmp_path / f"{case}.npz") as ours, np.load(fold / "validation" / f"{case}.npz") as run:
            # The job ran on one thread: convolutions summed in another order differ in the last bits.
            np.testing.assert_allclose(ours["probabilities"], run["probabilities"], rtol=0, atol=1e-6)
    assert load(tmp_path / "summary.json")["mean"] == load(fold / "validation" / "summary.json")["mean"]
