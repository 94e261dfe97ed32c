"""cfdan: reproducible companion to the CF-DAN paper (Zhang et al.).

Subpackages and modules: :mod:`cfdan.pcp`, :mod:`cfdan.pcp_kernels`, :mod:`cfdan.symbolic` and
:mod:`cfdan.pcp_report` (§3.4, the PCP activation), :mod:`cfdan.model` (§3.1-3.4),
:mod:`cfdan.data` (§4.1-4.2), :mod:`cfdan.train` and :mod:`cfdan.evaluate` (§4.2-4.4),
:mod:`cfdan.results` (the run store), :mod:`cfdan.sweep` (the experiment queue),
:mod:`cfdan.claims` (the claims ledger of §4.4-4.5), :mod:`cfdan.presets` (a table's
presets as a group), :mod:`cfdan.report` and
:mod:`cfdan.book` (what the chapters show). The README's "Where things
are" maps each paper section to its module, chapter and tests.
"""

__version__ = "0.1.0"
