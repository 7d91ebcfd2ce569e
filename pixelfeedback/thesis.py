"""What the thesis printed for Table 3.1 (VOC 2012 val mIoU, before CRF): its lambda grid,
its four losses' numbers and its baseline (SPEC section 3); and the pairs of highly
correlated classes it names (section 3.1). The sweep's defaults, the table's "thesis"
column, its pair-confusion columns and the synthetic data set's pairs read them from here."""
import math

from python_layers.template_similarity import LOSS_NAMES

LAMBDAS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0)  # the thesis's loss weights, Table 3.1's columns

BASELINE = 0.6225  # "earlier performance": DeepLab-LargeFOV, step schedule (SPEC section 2)

TABLE = {
    "correlation": (0.6314, 0.6285, 0.6252, 0.5977, 0.5560, 0.3253),
    "cosine": (0.6331, 0.6306, 0.6321, 0.6198, 0.6086, 0.5996),
    "selective_correlation": (0.62645, 0.32536, 0.32535, 0.32535, 0.32535, 0.32535),
    "selective_cosine": (0.63324, 0.63767, 0.63104, 0.61689, 0.60718, 0.59921),
}
LOSSES = tuple(name for name in LOSS_NAMES if name in TABLE)  # Table 3.1's rows, in order

# "highly correlated classes such as 'cat' and 'dog', 'sofa' and 'chair'" (section 3.1)
CORRELATED_PAIRS = (("cat", "dog"), ("chair", "sofa"))


def thesis_value(loss, lam):
    """The thesis's mIoU for ``loss`` at ``lam``, or None where it printed none (a lambda
    off its grid, a loss it did not run). Lambdas match within float rounding."""
    numbers = TABLE.get(loss)
    if numbers is None:
        return None
    for column, grid_lam in enumerate(LAMBDAS):
        if math.isclose(float(lam), grid_lam, rel_tol=1e-9):
            return numbers[column]
    return None
