"""Layout generations: iods.conf may only grow at its end."""

import json
import os

import pytest

from nfspd import layouts
from nfspd.layouts import LayoutError

A, B, C, D = ("a", 2050), ("b", 2050), ("c", 2051), ("d", 2050)


def test_first_start_records_generation_1(tmp_path):
    found, change = layouts.open_layouts(str(tmp_path), [A, B])
    assert found.current == 1 and found.iods(1) == [A, B]
    assert "generation 1" in change
    doc = json.loads((tmp_path / "layouts.json").read_text())
    assert doc == {"version": 1, "generations": {"1": ["a:2050", "b:2050"]}}
    # Same iods.conf again: nothing changes.
    again, change = layouts.open_layouts(str(tmp_path), [A, B])
    assert change is None and again.generations == found.generations


def test_appending_makes_a_new_generation_and_keeps_the_old(tmp_path):
    layouts.open_layouts(str(tmp_path), [A, B])
    grown, change = layouts.open_layouts(str(tmp_path), [A, B, C])
    assert "grew from 2 to 3" in change
    assert grown.current == 2 and grown.iods(1) == [A, B] and grown.iods(2) == [A, B, C]
    reloaded = layouts.load(str(tmp_path))
    assert reloaded.generations == grown.generations


@pytest.mark.parametrize("conf, fragment", [
    ([A], "lists 1 iods but layout generation 1 has 2: b:2050 missing"),
    ([B, A], "iod #1 is b:2050, but layout generation 1 has a:2050 there"),
    ([A, D], "iod #2 is d:2050, but layout generation 1 has b:2050 there"),
    ([D, A, B], "iod #1 is d:2050"),
])
def test_removing_or_reordering_is_refused(tmp_path, conf, fragment):
    layouts.open_layouts(str(tmp_path), [A, B])
    with pytest.raises(LayoutError) as e:
        layouts.open_layouts(str(tmp_path), conf, "/etc/nfsp/iods.conf")
    assert fragment in str(e.value)
    # Nothing was recorded.
    assert layouts.load(str(tmp_path)).generations == {1: [A, B]}


@pytest.mark.parametrize("text", [
    "not json", "[]", '{"version": 2, "generations": {}}',
    '{"version": 1, "generations": {"1": ["a:x"]}}',
    '{"version": 1, "generations": {"0": ["a:1"]}}',
    '{"version": 1, "generations": {"1": []}}',
    '{"version": 1, "generations": {"1": ["a:1"], "2": ["b:1", "a:1"]}}',
])
def test_damaged_file_is_an_error_not_a_guess(tmp_path, text):
    (tmp_path / "layouts.json").write_text(text)
    with pytest.raises(LayoutError):
        layouts.open_layouts(str(tmp_path), [A])


def test_save_is_atomic(tmp_path):
    layouts.open_layouts(str(tmp_path), [A])
    assert sorted(os.listdir(tmp_path)) == ["layouts.json"]
