"""Storage paths and URIs: bytes and small Parquet tables written and read the same way locally and on S3
(the S3 side is exercised by test_summarize / test_evaluate against moto)."""
import io

import pandas as pd

from tune_p7 import storage


def test_a_parquet_table_reads_back_equal_with_its_dtypes(tmp_path):
    df = pd.DataFrame({"trial_id": ["a", "b"], "rank": [1, 2], "margin": [0.25, float("nan")],
                       "deploy_ok": [True, False]})
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    path = storage.join(str(tmp_path), "exp", "summary.parquet")
    storage.write_bytes(path, buf.getvalue())
    back = storage.read_parquet(path)
    pd.testing.assert_frame_equal(back, pd.read_parquet(path))
    assert back["trial_id"].tolist() == ["a", "b"] and back["rank"].tolist() == [1, 2]
