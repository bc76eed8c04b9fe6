"""The intent detector measured on labelled messages: precision and recall.

LABELLED is the development set (the rules were written and adjusted against it,
so its figures are optimistic: precision 1.00, recall 0.99 when last measured).
HELD_OUT was written before the last change of the rules and never used for
tuning; its figures are the honest estimate (precision 0.875, recall 0.68 when
first measured; the first held-out set scored 1.00 / 0.59 before it joined
LABELLED). The rules favour precision, so a salesperson is not sent after false
intent, and miss phrasings they have not seen ("what's the rent", "is there a
cheaper model?"). When the rules are improved, move HELD_OUT into LABELLED and
write a new one; never tune on the held-out set."""

from leads.scoring import TEXT_MARKERS, detect_markers
from leads.tests.labelled_messages import LABELLED

OVERALL_PRECISION = 0.9
OVERALL_RECALL = 0.85
PER_MARKER_PRECISION = 0.8
PER_MARKER_RECALL = 0.75
HELD_OUT_PRECISION = 0.85
HELD_OUT_RECALL = 0.65


def _counts():
    counts = {marker: {"tp": 0, "fp": 0, "fn": 0} for marker in TEXT_MARKERS}
    mistakes = []
    for text, expected in LABELLED:
        found = set(detect_markers(text))
        for marker in TEXT_MARKERS:
            if marker in found and marker in expected:
                counts[marker]["tp"] += 1
            elif marker in found:
                counts[marker]["fp"] += 1
                mistakes.append(f"false {marker}: {text}")
            elif marker in expected:
                counts[marker]["fn"] += 1
                mistakes.append(f"missed {marker}: {text}")
    return counts, mistakes


def _ratio(num, den):
    return num / den if den else 1.0


def test_the_labelled_set_is_big_and_covers_every_marker_both_ways():
    assert len(LABELLED) >= 40
    negatives = [text for text, expected in LABELLED if not expected]
    assert len(negatives) >= 15
    for marker in TEXT_MARKERS:
        assert sum(marker in expected for _, expected in LABELLED) >= 3, marker


def test_overall_precision_and_recall():
    counts, mistakes = _counts()
    tp = sum(c["tp"] for c in counts.values())
    fp = sum(c["fp"] for c in counts.values())
    fn = sum(c["fn"] for c in counts.values())
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    print(f"overall precision {precision:.3f} recall {recall:.3f} (tp {tp}, fp {fp}, fn {fn})")
    print("\n".join(mistakes))
    assert precision >= OVERALL_PRECISION, mistakes
    assert recall >= OVERALL_RECALL, mistakes


def test_per_marker_precision_and_recall():
    counts, mistakes = _counts()
    for marker, c in counts.items():
        precision = _ratio(c["tp"], c["tp"] + c["fp"])
        recall = _ratio(c["tp"], c["tp"] + c["fn"])
        print(f"{marker:24} precision {precision:.2f} recall {recall:.2f}")
        assert precision >= PER_MARKER_PRECISION, (marker, mistakes)
        assert recall >= PER_MARKER_RECALL, (marker, mistakes)


def test_no_marker_fires_on_the_tricky_negatives():
    for text, expected in LABELLED:
        if not expected:
            assert detect_markers(text) == {}, text


def test_held_out_set():
    """Messages the rules were not tuned on: lower bars, honestly set from one run."""
    from leads.tests.labelled_messages import HELD_OUT

    tp = fp = fn = 0
    for text, expected in HELD_OUT:
        found = set(detect_markers(text))
        tp += len(found & expected)
        fp += len(found - expected)
        fn += len(expected - found)
        if found != expected:
            print(f"{text!r}: expected {sorted(expected)}, found {sorted(found)}")
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    print(f"held-out precision {precision:.3f} recall {recall:.3f} (tp {tp}, fp {fp}, fn {fn})")
    assert len(HELD_OUT) >= 30
    assert precision >= HELD_OUT_PRECISION
    assert recall >= HELD_OUT_RECALL
