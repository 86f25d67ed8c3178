import pytest

from segflow.errors import InputError
from segflow.splits import check_user_splits, kfold_splits, write_splits

HEART = [f"la_{i:03d}" for i in (3, 4, 5, 7, 9, 10, 11, 14, 16, 17, 18, 19, 20, 21, 22, 23, 24, 26, 29, 30)]


def test_heart_fold_0_matches_the_documented_example():
    assert kfold_splits(HEART)[0]["val"] == ["la_007", "la_016", "la_021", "la_024"]


def test_folds_partition_the_cases_and_lists_are_sorted():
    cases = [f"c{i:03d}" for i in range(23)]
    splits = kfold_splits(list(reversed(cases)))
    vals = [c for s in splits for c in s["val"]]
    assert sorted(vals) == cases and len(set(vals)) == 23
    assert [len(s["val"]) for s in splits] == [5, 5, 5, 4, 4]
    for s in splits:
        assert s["train"] == sorted(s["train"]) and s["val"] == sorted(s["val"])
        assert sorted(s["train"] + s["val"]) == cases


def test_user_splits_are_honoured_and_checked(tmp_path):
    user = tmp_path / "splits_final.json"
    user.write_text('[{"train": ["a", "b"], "val": ["c"]}]')
    out = tmp_path / "splits.json"
    write_splits(["a", "b", "c"], out, user_splits=user)
    assert out.read_text().count('"c"') == 1
    with pytest.raises(InputError, match="not in the dataset"):
        check_user_splits([{"train": ["a"], "val": ["zz"]}], ["a", "b"], user)
