"""The table `src run` prints: one row per iteration, blanks where a figure was not measured."""

from infra.layout import metrics_table


def test_the_table_shows_the_judge_and_the_reader_next_to_the_results():
    it0 = {"iteration": 0, "metrics": {"eval/accuracy": 0.506, "eval/accuracy_se": 0.016,
                                        "eval/consistency": 0.803, "eval/factuality": 0.164,
                                        "eval/format_rate": 1.0}}
    it1 = {"iteration": 1, "metrics": {**it0["metrics"], "eval/consistency": 0.859,
                                        "judge/onpolicy_agreement": 0.877, "judge/agree_same_answer": 0.552,
                                        "reader/agree_consistent": 0.942, "curate/kept_frac": 0.726}}
    head, rule, row0, row1 = metrics_table([it0, it1]).splitlines()
    cols = [c.strip() for c in head.strip("|").split("|")]
    assert cols[-5:] == ["judge agree", "same-answer agree", "reader agree", "kept", "dpo loss"]
    assert rule.count("---") == len(cols)
    cells = dict(zip(cols, (c.strip() for c in row1.strip("|").split("|"))))
    assert cells["accuracy"] == "50.6 ± 1.6" and cells["consistency"].startswith("85.9")
    assert (cells["same-answer agree"], cells["reader agree"], cells["dpo loss"]) == ("0.552", "0.942", "")
    assert dict(zip(cols, (c.strip() for c in row0.strip("|").split("|"))))["reader agree"] == ""
