"""cfdan: reproducible companion to the CF-DAN paper (Zhang et al.).

Subpackages: :mod:`cfdan.pcp` and :mod:`cfdan.symbolic` (§3.4, the PCP activation),
:mod:`cfdan.model` (§3.1-3.4), :mod:`cfdan.data` (§4.1-4.2), :mod:`cfdan.train` and
:mod:`cfdan.evaluate` (§4.2-4.4), :mod:`cfdan.results` (the run store).
"""

__version__ = "0.1.0"
