"""Postprocessing determination on constructed cases: keeping the largest component is accepted where it
removes false positives and rejected where it removes true foreground."""

import numpy as np

from segflow.postprocess import apply_postprocessing, determine_postprocessing, keep_largest, largest_component


def test_largest_component_uses_full_connectivity():
    mask = np.zeros((3, 3, 3), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # corner neighbours: one component with 26-connectivity
    mask[2, 2, 0] = True  # touches (1, 1, 1) only by an edge
    assert largest_component(mask).sum() == 3
    far = np.zeros((1, 1, 7), bool)
    far[0, 0, [0, 1, 2, 5]] = True
    np.testing.assert_array_equal(largest_component(far)[0, 0], [1, 1, 1, 0, 0, 0, 0])


def test_components_tied_for_largest_are_all_kept():
    line = np.zeros((1, 1, 11), bool)
    line[0, 0, [0, 1, 4, 5, 9]] = True  # two components of two voxels, one of one
    np.testing.assert_array_equal(largest_component(line)[0, 0], [1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0])


def test_keep_largest_turns_the_rest_into_background():
    seg = np.array([[[1, 1, 0, 2, 0, 1]]])
    np.testing.assert_array_equal(keep_largest(seg, [1, 2])[0, 0], [1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(keep_largest(seg, [1])[0, 0], [1, 1, 0, 2, 0, 0])


def case_with_speck(extra_true_blob: bool):
    """Reference: a cube of label 1 (plus, optionally, a second true blob). Prediction: the cube exactly and
    a false-positive speck far away, or, with the second blob, the cube and that blob."""
    reference = np.zeros((20, 20, 20), np.uint8)
    reference[2:8, 2:8, 2:8] = 1
    prediction = reference.copy()
    if extra_true_blob:
        reference[14:17, 14:17, 14:17] = 1
        prediction[14:17, 14:17, 14:17] = 1
    else:
        prediction[15:17, 15:17, 15:17] = 1
    return reference, prediction, [1.0, 1.0, 1.0]


def test_largest_component_is_accepted_where_it_removes_false_positives():
    result = determine_postprocessing([case_with_speck(False), case_with_speck(False)], [1])
    assert result["steps"] == [{"labels": [1]}]
    assert result["dice_after"]["foreground"] == 1.0 > result["dice_before"]["foreground"]


def test_largest_component_is_rejected_where_it_removes_true_foreground():
    result = determine_postprocessing([case_with_speck(True), case_with_speck(True)], [1])
    assert result["steps"] == []
    assert result["dice_after"] == result["dice_before"]


def test_per_label_step_b_and_application():
    reference = np.zeros((12, 12, 12), np.uint8)
    reference[1:5, 1:5, 1:5] = 1
    reference[6:10, 6:10, 6:10] = 2
    reference[1:3, 8:11, 8:11] = 2  # label 2 has two true parts: union-wide keep-largest would hurt it
    prediction = reference.copy()
    prediction[10:12, 0:2, 10:12] = 1  # a false speck of label 1
    result = determine_postprocessing([(reference, prediction, [1, 1, 1])], [1, 2])
    assert result["steps"] == [{"labels": [1]}]
    np.testing.assert_array_equal(apply_postprocessing(prediction, result["steps"]), reference)
