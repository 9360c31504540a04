"""Every milestone has a speed threshold checked by a benchmark, and the margins tool reads them right."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from llmfs import margins
from llmfs.course import load_course
from llmfs.testing import record_threshold

RECORDED = re.compile(r'record_threshold\(benchmark, "(\w+)"')


def test_every_milestone_has_a_speed_threshold_checked_by_a_benchmark():
    course = load_course()
    for milestone in course.milestones:
        source = "\n".join(p.read_text() for p in sorted((course.root / "tests" / milestone.id).glob("test_*.py")))
        recorded = set(RECORDED.findall(source))
        assert recorded, f"tests/{milestone.id} has no benchmark that calls record_threshold"
        unknown = recorded - set(milestone.thresholds)
        assert not unknown, f"tests/{milestone.id} records thresholds that course.toml lacks: {sorted(unknown)}"
        assert "pytest.mark.benchmark" in source, f"tests/{milestone.id} marks no test as a benchmark"


def test_record_threshold_gives_the_room_left_in_either_direction():
    bench = SimpleNamespace(extra_info={})
    assert record_threshold(bench, "speedup_min", 2.0, 3.0) == pytest.approx(1.5)
    assert bench.extra_info == {"threshold": "speedup_min", "limit": 2.0, "figure": 3.0, "margin": 1.5}
    assert record_threshold(bench, "ratio_max", 1.5, 1.2) == pytest.approx(1.25)
    with pytest.raises(ValueError, match="must end in _min or _max"):
        record_threshold(bench, "ratio", 1.0, 1.0)


def test_the_margin_table_flags_a_threshold_with_too_little_room():
    rows = [{"milestone": "05", "threshold": "x_max", "limit": 1.1, "figure": f, "margin": 1.1 / f} for f in (0.8, 1.0)]
    text = margins.table(rows)
    assert "| 05 | `x_max` | 1.1 | 0.8, 1 | 1.10 (below 1.2) |" in text


def test_margins_refuses_an_unknown_milestone_before_running_anything():
    with pytest.raises(Exception, match="no milestone '99'"):
        margins.main(["-m", "99", "--runs", "1"])
