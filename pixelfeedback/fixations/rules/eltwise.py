"""The Eltwise rule: which bottoms a unit of an element-wise sum, product or maximum came
from."""
import numpy as np

from pixelfeedback.fixations.kstrategy import CONTRIBUTIONS, VALUES
from pixelfeedback.fixations.units import shape3
from python_layers import ToolkitError


def eltwise(ctx, layer, t, units):
    """Eltwise: the top-K bottoms receive the unit, ranked by ``coeff * value`` at the unit
    for SUM and by the value for PROD and MAX (ties: the lower bottom index). Dead: SUM
    with every ``coeff * value`` exactly 0, PROD and MAX with no positive value."""
    from caffe.proto import caffe_pb2
    param = layer.proto.eltwise_param
    operation = caffe_pb2.EltwiseParameter.EltwiseOp.Name(param.operation)
    B = len(ctx.bottoms)
    coeffs = np.ones(B)
    if operation == "SUM" and len(param.coeff):
        if len(param.coeff) != B:
            raise ToolkitError(f"layer '{layer.name}': {len(param.coeff)} coeffs for "
                               f"{B} bottoms")
        coeffs = np.asarray(param.coeff, np.float64)
    spec = ctx.k_spec(1)
    item = ctx.items(units.tag)
    values = np.empty((len(units), B))
    for b in range(B):
        X = ctx.bottoms[b]
        X = X.reshape((X.shape[0],) + shape3(X.shape))
        values[:, b] = coeffs[b] * X[item, units.c, units.y, units.x].astype(np.float64)
        ctx.check_finite(values[:, b], b)
    rows, cols = ctx.choose(values, spec, units,
                            CONTRIBUTIONS if operation == "SUM" else VALUES)
    return [(b, units.take(rows[cols == b])) for b in range(B)]
