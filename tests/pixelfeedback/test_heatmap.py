"""Heat maps of fixations: outlier removal, counts, blur and scaling, overlay, figure, CSV."""
import cv2
import numpy as np
import pytest

from pixelfeedback import heatmap

SHAPE = (100, 120)  # diagonal 156.2 -> radius 15.6 at the default 0.1


def cluster_with_outlier(rng):
    """40 points within 5 px of (30, 40) plus one far point at (90, 110)."""
    cluster = np.array([30, 40]) + rng.randint(-5, 6, size=(40, 2))
    return np.vstack([cluster, [[90, 110]]])


def test_far_outlier_is_removed_and_cluster_kept(rng):
    points = cluster_with_outlier(rng)
    keep = heatmap.inlier_mask(points, SHAPE)
    assert keep[:-1].all()
    assert not keep[-1]


def test_inlier_rule_matches_brute_force(rng):
    points = rng.randint(0, 100, size=(300, 2))
    counts = rng.randint(1, 4, size=300)
    radius = 0.1 * np.hypot(*SHAPE)
    distance = np.hypot(*(points[:, None, :] - points[None, :, :]).transpose(2, 0, 1))
    near = (distance <= radius) @ counts
    expected = near > 0.05 * counts.sum()
    np.testing.assert_array_equal(heatmap.neighbour_counts(points, SHAPE, counts), near)
    np.testing.assert_array_equal(heatmap.inlier_mask(points, SHAPE, counts), expected)


def test_multiplicity_makes_a_lone_point_an_inlier():
    points = np.array([[10, 10], [80, 100], [81, 100]])
    assert not heatmap.inlier_mask(points, SHAPE, counts=[1, 10, 10])[0]
    assert heatmap.inlier_mask(points, SHAPE, counts=[30, 10, 10]).all()


def test_parameters_change_the_rule(rng):
    points = cluster_with_outlier(rng)
    assert heatmap.inlier_mask(points, SHAPE, radius_fraction=1.0)[-1]
    assert not heatmap.inlier_mask(points, SHAPE, min_fraction=0.99).any()


def test_points_outside_the_image_are_ignored():
    points = np.array([[5, 5], [5, 6], [-1, 3], [100, 0], [2, 120]])
    assert heatmap.count_map(points, SHAPE).sum() == 2
    keep = heatmap.inlier_mask(points, SHAPE)
    np.testing.assert_array_equal(keep, [True, True, False, False, False])


def test_counts_per_pixel_weighted_by_multiplicity():
    points = np.array([[3, 4], [3, 4], [7, 1]])
    counts = heatmap.count_map(points, SHAPE, counts=[2, 1, 5])
    assert counts[3, 4] == 3 and counts[7, 1] == 5 and counts.sum() == 8


def test_heat_is_blurred_and_scaled_to_unit_range(rng):
    points = cluster_with_outlier(rng)
    result = heatmap.fixation_heatmap(points, SHAPE, sigma=3)
    assert result.heat.shape == SHAPE and result.heat.dtype == np.float32
    assert result.heat.min() >= 0 and result.heat.max() == pytest.approx(1.0)
    assert result.counts.sum() == 40  # the outlier is not counted
    y, x = result.peak
    assert abs(y - 30) <= 5 and abs(x - 40) <= 5
    assert result.heat[90, 110] < 1e-3
    # blurring spreads the mass: more non-zero pixels than counted pixels
    assert (result.heat > 0).sum() > (result.counts > 0).sum()


def test_default_sigma_is_a_fraction_of_the_diagonal():
    assert heatmap.default_sigma((300, 400)) == pytest.approx(heatmap.SIGMA_FRACTION * 500)


def test_no_points_give_a_zero_map():
    result = heatmap.fixation_heatmap(np.zeros((0, 2)), SHAPE)
    assert result.peak is None and not result.heat.any()


def test_overlay_shape_dtype_and_blend(rng):
    image = rng.randint(0, 256, size=SHAPE + (3,)).astype(np.uint8)
    heat = np.zeros(SHAPE, np.float32)
    heat[50, 60] = 1
    overlay = heatmap.overlay_heatmap(image, heat, alpha=0.5)
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    np.testing.assert_array_equal(heatmap.overlay_heatmap(image, heat, alpha=0.0), image)
    jet_top = cv2.applyColorMap(np.array([[255]], np.uint8), cv2.COLORMAP_JET)[0, 0]
    np.testing.assert_array_equal(heatmap.overlay_heatmap(image, heat, alpha=1.0)[50, 60], jet_top)


def test_figure_heatmap_png_and_csv_are_written(tmp_path, rng):
    image = rng.randint(0, 256, size=SHAPE + (3,)).astype(np.uint8)
    points = cluster_with_outlier(rng)
    result = heatmap.fixation_heatmap(points, SHAPE)
    rows = [heatmap.FigureRow("cat", points, result.inliers, result.heat),
            heatmap.FigureRow("dog", points[:5], np.ones(5, bool), result.heat)]
    figure = heatmap.save_fixation_figure(str(tmp_path / "fig.png"), image, rows)
    assert cv2.imread(figure) is not None

    png = heatmap.write_heatmap_png(str(tmp_path / "heat.png"), result.heat)
    grey = cv2.imread(png, cv2.IMREAD_UNCHANGED)
    assert grey.shape == SHAPE and grey.max() == 255

    csv = heatmap.write_points_csv(str(tmp_path / "points.csv"), np.vstack([points, points[:1]]))
    with open(csv) as f:
        assert f.readline().strip() == "y,x,count"
    read_points, read_counts = heatmap.read_points_csv(csv)
    merged, merged_counts = heatmap.merge_points(np.vstack([points, points[:1]]))
    np.testing.assert_array_equal(read_points, merged)
    np.testing.assert_array_equal(read_counts, merged_counts)
    assert read_counts.sum() == len(points) + 1
