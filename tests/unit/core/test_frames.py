"""Undo frames and the one `#applied` marker: what the tables hold so that a crash changes nothing."""

from __future__ import annotations

import orjson

from streams.core.frames import APPLIED, applied_of, applied_value, committed, restore_at, stored, unchanged


def _json(value: object) -> bytes:
    return orjson.dumps(value)


def test_restore_when_applied_covers_the_batch_then_current_values() -> None:
    a = stored(10, _json({"v": 1}), None, 9)
    b = stored(10, _json({"v": 2}), stored(5, _json({"v": 0}), None, 4), 9)
    values = [("A", a), ("B", b), (APPLIED, applied_value(10))]
    assert restore_at(values, applied_of(applied_value(10))) == {"A": {"v": 1}, "B": {"v": 2}}


def test_restore_when_changelog_cut_inside_a_batch_then_values_before_it_and_new_keys_absent() -> None:
    old = stored(5, _json({"v": 0}), None, 4)
    rewritten = stored(12, _json({"v": 9}), old, 5)
    created = stored(12, _json({"v": 7}), None, 5)
    assert restore_at([("B", rewritten), ("C", created), (APPLIED, applied_value(5))], 5) == {"B": {"v": 0}}


def test_restore_when_other_tables_marker_names_the_batch_then_each_table_restores_to_it() -> None:
    # One marker (in the last level's table) covers every level's table of the chain.
    level1 = [("A", stored(12, _json({"v": 2}), stored(8, _json({"v": 1}), None, 7), 8))]
    level4 = [("A", stored(8, _json({"w": 1}), None, 7)), (APPLIED, applied_value(8))]
    done = applied_of(dict(level4)[APPLIED])
    assert (restore_at(level1, done), restore_at(level4, done)) == ({"A": {"v": 1}}, {"A": {"w": 1}})


def test_applied_of_when_no_marker_then_minus_one() -> None:
    assert applied_of(None) == -1
    assert applied_of(applied_value(41)) == 41


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
