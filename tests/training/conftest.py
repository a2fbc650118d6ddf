"""A tiny ingested (and ROI-segmented) synthetic lakehouse for the training tests."""

from __future__ import annotations

import pytest

from allmtl_spark.config import load_config

TINY_TRAIN = [
    "train.input_size=75",
    "train.tasks=[binary]",
    "train.num_proc=2",
    "train.stage2.epochs=1",
    "train.stage3.epochs=1",
    "train.stage2.batch_size=4",
    "train.stage3.batch_size=4",
    "train.augment.copies_per_image=1",
    "train.split.test_fraction=0.25",
    "train.split.val_fraction=0.2",
    "train.stage2_task=cell_binary",
]


def tiny_config(root, extra: list[str] | None = None):
    return load_config(
        "conf/demo.yaml",
        [
            f"lakehouse.path={root}/lakehouse",
            f"synth.output={root}/data",
            "synth.n_slides=16",
            "synth.n_cells=24",
            "synth.slides_per_patient=1",  # 16 patients: stage 2 keeps only training-side patients' cells
            "synth.slide_width=320",
            "synth.slide_height=240",
            "synth.workers=1",
            "segment.mask_source=roi",
            "spark.master=local[2]",
            f"ingest.sources=[{{kind: manifest, path: {root}/data/manifest.csv}}]",
            *TINY_TRAIN,
            *(extra or []),
        ],
    )


@pytest.fixture(scope="module")
def train_lake(spark, tmp_path_factory):
    """(config, lake) with 16 slides and 24 cells ingested and the slides segmented (threshold ROI)."""
    from allmtl_spark.ingest.job import run_ingest
    from allmtl_spark.lakehouse import Lakehouse
    from allmtl_spark.segmentation.job import run_segment
    from allmtl_spark.synth.dataset import write_dataset

    root = tmp_path_factory.mktemp("train")
    cfg = tiny_config(root)
    write_dataset(cfg.synth, progress=None)
    lake = Lakehouse.from_config(cfg.lakehouse)
    run_ingest(spark, cfg.ingest, cfg.privacy, lake)
    run_segment(spark, cfg.segment, cfg.roi, lake)
    return cfg, lake, root
