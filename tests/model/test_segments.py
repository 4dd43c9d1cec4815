"""The segment-layout convention: what validate_segment_ids accepts and what it rejects, and the helpers."""
import pytest
import torch

from model.segments import (
    SegmentLayoutError,
    check_finite,
    global_segment_index,
    position_ids_from_segments,
    segment_ids_from_lengths,
    segment_starts,
    validate_segment_ids,
)

GOOD = torch.tensor([[0, 0, 1, 1, 1, 2, -1, -1],
                     [0, 0, 0, 0, 0, 0, 0, 0],
                     [-1, -1, -1, -1, -1, -1, -1, -1]])


def test_valid_layout_passes_unchanged():
    assert validate_segment_ids(GOOD, rows=3, length=8) is GOOD


@pytest.mark.parametrize("ids, needle", [
    (torch.tensor([[1, 1, 2]]), "starts with segment 1"),
    (torch.tensor([[0, 2, 2]]), "from segment 0 to 2"),
    (torch.tensor([[0, 1, 0]]), "from segment 1 to 0"),
    (torch.tensor([[0, -1, 1]]), "after padding"),
    (torch.tensor([[0.0, 1.0]]), "int64"),
    (torch.tensor([0, 1]), "(rows, length)"),
])
def test_bad_layouts_raise_a_value_error_naming_the_problem(ids, needle):
    with pytest.raises(ValueError, match=None) as info:
        validate_segment_ids(ids)
    assert needle in str(info.value)
    assert isinstance(info.value, SegmentLayoutError)


def test_shape_mismatch_with_values_is_named():
    with pytest.raises(SegmentLayoutError, match=r"\(rows, length\) = \(2, 8\)"):
        validate_segment_ids(GOOD, rows=2, length=8)


def test_starts_positions_and_global_index():
    starts = segment_starts(GOOD)
    assert starts[0].tolist() == [True, False, True, False, False, True, False, False]
    assert not starts[2].any()
    pos = position_ids_from_segments(GOOD)
    assert pos[0].tolist() == [0, 1, 0, 1, 2, 0, -1, -1]
    assert pos[1].tolist() == list(range(8))
    gidx, count = global_segment_index(GOOD)
    assert count == 4
    assert gidx[0].tolist() == [0, 0, 1, 1, 1, 2, -1, -1]
    assert gidx[1].tolist() == [3] * 8
    assert (gidx[2] == -1).all()


def test_check_finite_names_the_first_bad_index():
    t = torch.zeros(2, 3)
    t[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"values contains NaN or inf \(first at index \(1, 2\)\)"):
        check_finite(t, "values")
    check_finite(torch.zeros(2), "ok")


def test_segment_ids_from_lengths_lays_out_rows_and_refuses_overfull_ones():
    ids = segment_ids_from_lengths([[2, 3, 1], [8], []], 8)
    assert ids.tolist() == [[0, 0, 1, 1, 1, 2, -1, -1], [0] * 8, [-1] * 8]
    validate_segment_ids(ids)
    with pytest.raises(SegmentLayoutError, match=r"row 0: segment lengths \[5, 4\] do not fit in 8"):
        segment_ids_from_lengths([[5, 4]], 8)
