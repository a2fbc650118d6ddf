"""``allmtl bench score`` end to end on tiny slides: every side really runs and is reported."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from allmtl_spark.bench.score import run_bench_score, run_plain
from allmtl_spark.scoring.job import ScorePlan, resolve_classifiers
from allmtl_spark.segmentation.job import resolve_segmenter

pytestmark = pytest.mark.spark


def _keras(cfg):
    # Keras: the tiny models' TFLite conversion is the tflite tests' business (and 30 s here)
    return replace(cfg, score=replace(cfg.score, runtime="keras"))


def _figure(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in:\n{text}"
    return match.group(1)


@pytest.mark.slow  # 95 s: a benchmark's plumbing, run by make test-all
def test_bench_score_runs_the_plain_process_spark_and_the_split_and_prints_their_ratios(spark, scoring_lake, tmp_path):
    cfg, _, _ = scoring_lake
    text = run_bench_score(spark, _keras(cfg), 4, 320, 240, str(tmp_path), progress=lambda _: None)

    seconds = {side: float(_figure(rf"\({side}\)[^:]*:\s+([\d.]+) s", text)) for side in ("a", "b", "c")}
    assert all(s > 0 for s in seconds.values()), text
    # the ratios come from the measured times (printed to 0.1 s, hence the tolerance), not fixed
    for pattern, over, under in (
        (r"Spark / plain: ([\d.]+)x", "a", "b"),
        (r"2 processes / plain: ([\d.]+)x", "a", "c"),
    ):
        ratio = seconds[over] / seconds[under]
        rounding = ratio * (0.05 / seconds[over] + 0.05 / seconds[under]) + 0.005
        assert float(_figure(pattern, text)) == pytest.approx(ratio, abs=rounding)
    # the split really splits: each process scored its share, together what the lone process scored
    alone = int(_figure(r"(\d+) slides scored;", text))
    shares = [int(n) for n in _figure(r"slides scored \[([\d, ]+)\]", text).split(",")]
    assert alone == 4 and sum(shares) == alone and min(shares) >= 1
    # no segmenter in this config (mask_source roi): slide + cell classifier, once per process
    assert "(models loaded 2 times;" in text
    assert "(models loaded [2, 2] times;" in text
    loads = _figure(r"model loads per worker \{([^}]*)\}", text)
    assert [int(n) for n in re.findall(r": (\d+)", loads)] and set(re.findall(r": (\d+)", loads)) == {"2"}
    assert "kept" in text and "cores busy" in text


@pytest.mark.slow  # 13 s: a benchmark's plumbing, run by make test-all
@pytest.mark.timeout(300)  # a regression would wait forever
def test_a_failing_plain_process_raises_instead_of_the_bench_waiting_forever(spark, scoring_lake, tmp_path):
    cfg, lake, _ = scoring_lake
    cfg = _keras(cfg)
    classifier, cell_model = resolve_classifiers(spark, lake, cfg)
    plan = ScorePlan.build(
        classifier, cell_model, resolve_segmenter(spark, lake, cfg.segment, cfg.roi), cfg, lake.cache
    )

    with pytest.raises(RuntimeError, match=r"plain scoring process 0 failed \(exit code 1\)"):
        run_plain([str(tmp_path / "no-such-slide.jpg")], plan, processes=2)
