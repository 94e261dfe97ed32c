"""§3.4: the piecewise cubic activation (PCP), one module a concern.

:mod:`~cfdan.pcp.activation` (the op, its closed-form coefficients and the ``nn.Module``),
:mod:`~cfdan.pcp.kernels` (the fused CPU/GPU kernels), :mod:`~cfdan.pcp.symbolic` (the SymPy
derivation), :mod:`~cfdan.pcp.report` (chapter 1's claims) and :mod:`~cfdan.pcp.bench`
(timings). The op's public names are re-exported here.
"""

from cfdan.pcp.activation import (
    DEFAULT_P1,
    DEFAULT_S_L,
    DEFAULT_X_L,
    PCP,
    coefficients,
    knot_values,
    pcp,
    pcp_from_coefficients,
    validate_parameters,
)

__all__ = ["DEFAULT_P1", "DEFAULT_S_L", "DEFAULT_X_L", "PCP", "coefficients", "knot_values",
           "pcp", "pcp_from_coefficients", "validate_parameters"]
