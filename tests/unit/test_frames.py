"""Undo frames, `#applied` and item tags: what a level's table holds so that a crash changes nothing."""

from __future__ import annotations

import orjson

from streams.core.frames import (
    APPLIED,
    applied_value,
    committed,
    fresh,
    restore,
    src_marker,
    stored,
    unchanged,
)


def _json(value: object) -> bytes:
    return orjson.dumps(value)


def test_restore_when_applied_covers_the_batch_then_current_values() -> None:
    a = stored(10, _json({"v": 1}), None, 9)
    b = stored(10, _json({"v": 2}), stored(5, _json({"v": 0}), None, 4), 9)
    applied, hw, state = restore([("A", a), ("B", b), (APPLIED, applied_value(10, (10, 3)))])
    assert (applied, hw, state) == (10, (10, 3), {"A": {"v": 1}, "B": {"v": 2}})


def test_restore_when_changelog_cut_inside_a_batch_then_values_before_it_and_new_keys_absent() -> None:
    old = stored(5, _json({"v": 0}), None, 4)
    rewritten = stored(12, _json({"v": 9}), old, 5)
    created = stored(12, _json({"v": 7}), None, 5)
    applied, hw, state = restore([("B", rewritten), ("C", created), (APPLIED, applied_value(5, (5, 0)))])
    assert (applied, hw, state) == (5, (5, 0), {"B": {"v": 0}})


def test_stored_when_previous_value_is_an_unapplied_batch_then_undo_part_is_its_committed_value() -> None:
    # A crash left B at batch 12 (not applied: #applied is 5); the redo, as batch 11, must keep v=0 as its undo.
    cut = stored(12, _json({"v": 9}), stored(5, _json({"v": 0}), None, 4), 5)
    redo = stored(11, _json({"v": 8}), cut, 5)
    assert committed(redo, 5) == _json({"v": 0})
    assert committed(redo, 11) == _json({"v": 8})


def test_unchanged_when_committed_value_equal_then_true_and_when_unapplied_or_different_then_false() -> None:
    value = stored(5, _json({"v": 0}), None, 4)
    assert unchanged(value, _json({"v": 0}), 5)
    assert not unchanged(value, _json({"v": 1}), 5)
    assert not unchanged(value, _json({"v": 0}), 4)  # written by a batch not applied yet: must be written again
    assert not unchanged(None, _json({"v": 0}), 5)


def test_fresh_when_upstream_resends_part_of_its_log_then_repeats_skipped_and_order_kept() -> None:
    log = [((1, 0, 0), "a"), ((1, 1, 0), "b"), ((2, 0, 0), "c"), ((1, 1, 0), "b"), ((2, 0, 0), "c"), ((3, 0, 0), "d")]
    kept, skipped, hw = fresh(log, None)
    assert [item for _, item in kept] == ["a", "b", "c", "d"]
    assert (skipped, hw) == (2, (3, 0, 0))


def test_fresh_when_high_water_restored_then_items_up_to_it_skipped() -> None:
    kept, skipped, hw = fresh([((4, 0), "x"), ((4, 1), "y"), ((5, 0), "z")], (4, 1))
    assert ([item for _, item in kept], skipped, hw) == (["z"], 2, (5, 0))


def test_fresh_when_nothing_new_then_high_water_unchanged() -> None:
    assert fresh([((4, 0), "x")], (7,)) == ([], 1, (7,))


def test_src_marker_names_level_partition_tag_and_index() -> None:
    assert src_marker("portfolio", 3, (120, 4, 0, 1), 2) == b"portfolio|3|120.4.0.1|2"
    assert src_marker("portfolio", 3, (120, 4, 0, 1), 2) != src_marker("portfolio", 3, (120, 4, 0, 11), 2)
