"""The one ranking key of the summary and the evaluation, and the table's number format."""
import math

import pandas as pd

from tune_p7.core.ranking import fmt, ranked_index, ranking_key


def test_the_deployment_check_ranks_first_then_the_verdict_then_the_margin():
    df = pd.DataFrame({"deploy_ok": [False, True, True, True, True],
                       "verdict": ["PASS", "MARGINAL", "PASS", "PASS", "FAIL"],
                       "margin": [0.9, 0.5, math.nan, 0.3, 0.8]}, index=list("abcde"))
    assert ranked_index(df) == ["d", "c", "b", "e", "a"]  # a NaN margin ranks after any number
    assert ranking_key(True, "PASS", 0.3) < ranking_key(True, "PASS", math.nan) < ranking_key(False, "PASS", 1.0)


def test_loguniform_values_in_scientific_notation_others_to_three_significant_digits():
    assert fmt(0.000234, "loguniform") == "2.34e-04" and fmt(0.0015, "loguniform") == "1.50e-03"
    assert fmt(0.05, "choice") == "0.05" and fmt(0.1, "grid") == "0.1"
    assert fmt(0.123456) == "0.123" and fmt(-0.0123456) == "-0.0123" and fmt(0.5) == "0.500"
    assert fmt(123.456) == "123" and fmt(2345.6) == "2346" and fmt(0.0) == "0" and fmt(3e-6) == "3.00e-06"
    assert fmt(7) == "7" and fmt(True) == "yes" and fmt(math.nan) == "nan" and fmt(None) == "" and fmt("x") == "x"
