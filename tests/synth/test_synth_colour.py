"""The class lives in lymphoid-cell morphology, not colour: colour-only scores near chance, morphology far above.

Both read the same cells the classifier's montage shows (each slide's four largest white cells) and
use the same logistic regression and patient-grouped cross-validation (``allmtl synth --check``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from allmtl_spark.config.schema import SynthConfig
from allmtl_spark.evaluation.colour_baseline import compute_grouped_cv_accuracy
from allmtl_spark.synth.check import ClassifierView, chosen_crops, measure_slides, run_check
from allmtl_spark.synth.dataset import plan_items
from allmtl_spark.synth.smear import render_slide

pytestmark = pytest.mark.unit
CLASSES = ("normal", "L1", "L2", "L3")
SMALL_SET = SynthConfig(
    n_slides=64,
    n_cells=64,  # crops of 26 um set no pixel-size floor above 0.15 um/px: the slides are as without crops
    cell_crop_size_um=26.0,
    slide_width=320,
    slide_height=240,
    pixel_size_um=(0.15, 0.31),
    workers=1,
    seed=5,
    class_mix=dict.fromkeys(CLASSES, 1.0),
)
# Thresholds hold for seeds 1-5 of this set (colour 0.24-0.41, morphology 0.72-0.78 on 4 classes; crops, seeds
# 1, 2, 5: colour 0.72-0.75, morphology 0.91-0.97, chance 0.75; the montages, seeds 1, 2, 5: colour with rims
# 0.38-0.47, inner colour 0.27-0.29, cell areas 0.65-0.70).
DEMO_VIEW = ClassifierView(pixel_size_um=0.31, tile_um=24.0, grid=2, input_size=75)  # conf/demo.yaml's


@pytest.fixture(scope="module")
def report():
    return run_check(SMALL_SET, folds=4, repeats=2, progress=None, view=DEMO_VIEW)


def test_colour_alone_scores_near_chance_on_four_classes(report):
    assert report.colour_fab4.chance == pytest.approx(0.25)
    assert report.colour_fab4.accuracy < 0.45
    assert report.colour_binary.accuracy < 0.85  # chance (always ALL) is 0.75


def test_morphology_in_micrometres_separates_the_classes(report):
    assert report.morphology_fab4.accuracy > 0.6
    assert report.morphology_fab4.accuracy > report.colour_fab4.accuracy + 0.25
    assert report.morphology_binary.accuracy > report.colour_binary.accuracy + 0.08


def test_crops_carry_blast_or_lymphocyte_in_morphology_not_colour(report):
    # Stage 2's inputs: the cell at the centre of each crop, blast vs lymphocyte (a quarter are lymphocytes here).
    assert report.crop_colour.n_items == SMALL_SET.n_cells and report.crop_colour.chance == pytest.approx(0.75)
    assert report.crop_colour.accuracy < 0.82
    assert report.crop_morphology.accuracy > 0.88
    assert report.crop_morphology.accuracy > report.crop_colour.accuracy + 0.12


def test_on_the_classifier_montage_cell_size_is_the_cue_and_inner_colour_is_not(report):
    # Shape-blind features of what the classifier sees: the cells' areas carry much of the class, the colour of
    # their inner pixels stays near chance, and counting the rims the resize blends with black lets size back in.
    assert report.view_colour_fab4.n_items == SMALL_SET.n_slides and report.view_colour_fab4.chance == 0.25
    assert report.view_colour_fab4.accuracy < 0.35
    assert report.view_size_fab4.accuracy > report.view_colour_fab4.accuracy + 0.3
    assert report.view_colour_with_rims.accuracy > report.view_colour_fab4.accuracy + 0.08
    assert "cell areas only, 4 classes" in report.format()


def test_a_split_that_ignores_patients_lets_colour_recognise_them(report):
    # A patient's slides share stain and camera: split by slide, colour finds the sibling slide's class.
    assert report.same_patient_neighbour > 10 * report.neighbour_chance
    assert report.colour_fab4_by_slide.accuracy > report.colour_fab4.accuracy + 0.05


def test_the_check_finds_a_colour_cue_when_the_generator_plants_one(monkeypatch):
    # Stain L3 cytoplasm orange-red instead of blue (a colour cue): the same colour-only check must now see it.
    import allmtl_spark.synth.cells as cells
    from allmtl_spark.synth.stain import BASO, GRANULE

    real = cells.lymphoid_sprite

    def orange_l3(rng, kind, px_per_um, typical_um, look=cells.CellLook()):
        sprite = real(rng, kind, px_per_um, typical_um, look)
        if kind == "L3":
            sprite.conc[GRANULE], sprite.conc[BASO] = 1.5 * sprite.conc[BASO], 0.0
        return sprite

    monkeypatch.setattr("allmtl_spark.synth.smear.lymphoid_sprite", orange_l3)
    cfg = dataclasses.replace(SMALL_SET, n_slides=40, n_cells=40, class_mix={"normal": 1.0, "L3": 1.0})
    measures = measure_slides(cfg, crops=True)
    labels = [m.label for m in measures]
    groups = [m.patient_id for m in measures]
    colour = np.stack([m.colour for m in measures])
    cued = compute_grouped_cv_accuracy(colour, labels, groups, folds=4, regularisation=1.0)
    assert cued.accuracy > 0.75  # chance is 0.5
    crops = chosen_crops(cfg, plan_items(cfg), measures)
    crop_labels = [c.candidate.kind for c, _ in crops]
    assert crop_labels.count("L3") == crop_labels.count("normal") == 20
    crop_colour = np.stack([c.colour for c, _ in crops])
    cued = compute_grouped_cv_accuracy(crop_colour, crop_labels, [p for _, p in crops], folds=4, regularisation=1.0)
    assert cued.accuracy > 0.75  # chance is 0.5


def test_same_seed_gives_the_same_colour_whatever_the_class():
    # Stain, optics and scale are drawn before anything class-dependent: with one seed, the four classes differ
    # only by the white cells and where the red cells fall, far less than slides of different seeds.
    per_seed = np.array(
        [
            [
                render_slide(np.random.default_rng([33, seed]), 320, 240, c, SMALL_SET).image.reshape(-1, 3).mean(0)
                for c in CLASSES
            ]
            for seed in range(6)
        ]
    )  # seeds x classes x RGB
    within = np.abs(per_seed - per_seed[:, :1]).max()
    between = (per_seed[:, 0].max(0) - per_seed[:, 0].min(0)).max()
    assert between > 3 * within
    assert (per_seed[:, 0].max(0) - per_seed[:, 0].min(0)).min() > 20  # slide colours vary widely


def test_the_montage_shows_the_largest_cells_at_their_physical_size_whatever_the_slide_pixel_size():
    from allmtl_spark.synth.check import classifier_view, measure_view

    cfg = dataclasses.replace(SMALL_SET, class_mix={"L2": 1.0})
    for pixel_size in (0.15, 0.3):
        slide = render_slide(
            np.random.default_rng(3), 640, 480, "L2", dataclasses.replace(cfg, pixel_size_um=(pixel_size,) * 2)
        )
        picture = classifier_view(slide, DEMO_VIEW)
        assert picture.shape == (75, 75, 3)
        shown = measure_view(picture, DEMO_VIEW).areas_um2
        true = np.sort(np.bincount(slide.labels.ravel())[1:])[::-1][:4] * pixel_size**2  # ground truth, um^2
        # largest first, each at its own size (plus the rim the resize blends with black: up to a fifth more)
        np.testing.assert_allclose(shown, true * 1.1, rtol=0.12)
