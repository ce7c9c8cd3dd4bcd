"""The platform's seq tracker (central/seqtrack.py): pure, so no peer is needed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from central.seqtrack import MAX_HOLES_PER_STREAM, Gap, SeqTracker, Verdict


def test_the_tracker_reports_gaps_fills_them_late_and_drops_duplicates() -> None:
    t = SeqTracker()
    assert t.observe("S1", "G1", "alarm", 7) == ("new", None)  # first sight is the baseline
    assert t.observe("S1", "G1", "alarm", 8) == ("new", None)
    assert t.observe("S1", "G1", "alarm", 8) == ("duplicate", None)
    assert t.observe("S1", "G1", "alarm", 12) == ("new", Gap("alarm", 9, 11))
    assert t.observe("S1", "G1", "alarm", 10) == ("late", None)
    assert t.missing("S1", "G1", "alarm") == [(9, 9), (11, 11)]
    assert t.observe("S1", "G1", "alarm", 10) == ("duplicate", None)
    assert t.observe("S1", "G2", "alarm", 1) == ("new", None)  # streams are per gateway
    assert t.observe("S1", "G1", "event", 1) == ("new", None)


def test_history_before_the_first_record_is_unknown_not_missing() -> None:
    t = SeqTracker()
    assert t.observe("S1", "G1", "telemetry", 500) == ("new", None)
    assert t.missing("S1", "G1", "telemetry") == []
    # a record from before the baseline cannot be told from a resend: it is not delivered
    assert t.observe("S1", "G1", "telemetry", 3) == ("duplicate", None)
    assert t.missing("S1", "G1", "never-seen") == []


def test_a_gap_counts_its_records_and_late_fills_split_it_from_both_ends_and_the_middle() -> None:
    t = SeqTracker()
    t.observe("S1", "G1", "event", 1)
    verdict, gap = t.observe("S1", "G1", "event", 11)
    assert (verdict, gap) == ("new", Gap("event", 2, 10))
    assert gap is not None and gap.count == 9
    assert t.observe("S1", "G1", "event", 2) == ("late", None)
    assert t.observe("S1", "G1", "event", 10) == ("late", None)
    assert t.observe("S1", "G1", "event", 6) == ("late", None)
    assert t.missing("S1", "G1", "event") == [(3, 5), (7, 9)]


def test_sites_are_kept_apart_even_with_the_same_gateway_name() -> None:
    t = SeqTracker()
    t.observe("S1", "G1", "alarm", 1)
    assert t.observe("S2", "G1", "alarm", 1) == ("new", None)
    assert t.observe("S2", "G1", "alarm", 5) == ("new", Gap("alarm", 2, 4))
    assert t.missing("S1", "G1", "alarm") == []


def test_only_the_newest_holes_are_remembered_so_the_state_stays_bounded() -> None:
    t = SeqTracker()
    t.observe("S1", "G1", "telemetry", 0)
    for i in range(1, MAX_HOLES_PER_STREAM + 11):  # every other seq skipped
        assert t.observe("S1", "G1", "telemetry", 2 * i)[1] == Gap(
            "telemetry", 2 * i - 1, 2 * i - 1
        )
    holes = t.missing("S1", "G1", "telemetry")
    assert len(holes) == MAX_HOLES_PER_STREAM
    assert holes[0] == (21, 21)  # the ten oldest were forgotten
    assert t.observe("S1", "G1", "telemetry", 1) == ("duplicate", None)  # forgotten
    assert t.observe("S1", "G1", "telemetry", 21) == ("late", None)


def _model(seqs: list[int]) -> tuple[list[Verdict], list[int]]:
    """The rules in the obvious way: a set of seen seqs, the first one the baseline."""
    seen: set[int] = set()
    verdicts: list[Verdict] = []
    for seq in seqs:
        if not seen or seq > max(seen):
            verdicts.append("new")
        elif seq in seen or seq < seqs[0]:
            verdicts.append("duplicate")
        else:
            verdicts.append("late")
        seen.add(seq)
    missing = [s for s in range(seqs[0], max(seen) + 1) if s not in seen] if seqs else []
    return verdicts, missing


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=60), max_size=80))
def test_the_tracker_agrees_with_a_set_of_seen_seqs(seqs: list[int]) -> None:
    t = SeqTracker()
    got = [t.observe("S", "G", "alarm", s)[0] for s in seqs]
    verdicts, missing = _model(seqs)
    assert got == verdicts
    ranges = t.missing("S", "G", "alarm")
    assert [s for a, b in ranges for s in range(a, b + 1)] == missing
