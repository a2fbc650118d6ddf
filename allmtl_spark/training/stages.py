"""The stage schedule: which models a training run makes, in which order, from which weights.

Multistage (MTL): W0 (configured weights, ImageNet in the paper) -> stage 2 on single cells
(W2) -> stage 3 on slides with a new dense head, per task. Classical TL: W0 -> stage 3 directly,
same stage-3 budget, so the two are comparable. Which layers a stage trains is its
``StageConfig.trainable``, kept here beside the schedule rather than in the model builders.
"""

from __future__ import annotations

from dataclasses import dataclass

from allmtl_spark.config.schema import StageConfig, TrainConfig
from allmtl_spark.training.examples import TASK_CLASSES


@dataclass(frozen=True)
class StagePlan:
    key: str  # stable within a run: stage2-cell_binary-inceptionv3, stage3-fab4-mtl-xception ...
    stage: str  # stage2 | stage3
    task: str  # cell_binary | binary | fab4
    approach: str | None  # mtl | classical for stage 3
    backbone: str
    init_from: str | None  # key of the stage whose weights start this one; None: configured weights
    head: str  # simple (stage 2) | dense (stage 3, the paper's new head)
    schedule: StageConfig

    @property
    def class_names(self) -> tuple[str, ...]:
        return TASK_CLASSES[self.task]

    def model_id(self, run_id: str) -> str:
        return f"{run_id}-{self.key}"


def plan_stages(cfg: TrainConfig) -> list[StagePlan]:
    """Stages in run order: per backbone, stage 2 first (if MTL is wanted), then stage 3 per task."""
    plans = []
    for backbone in cfg.backbones:
        tag = backbone.lower()
        stage2 = None
        if "mtl" in cfg.approaches:
            stage2 = StagePlan(
                f"stage2-{cfg.stage2_task}-{tag}", "stage2", cfg.stage2_task, None, backbone, None, "simple", cfg.stage2
            )
            plans.append(stage2)
        for task in cfg.tasks:
            for approach in cfg.approaches:
                init = stage2.key if approach == "mtl" else None
                plans.append(
                    StagePlan(
                        f"stage3-{task}-{approach}-{tag}", "stage3", task, approach, backbone, init, "dense", cfg.stage3
                    )
                )
    return plans
