"""cfdan: reproducible companion to the CF-DAN paper (Zhang et al.).

The package in layers, each importing only from those above it in this list
(``tests/test_repo.py`` checks):

* base modules: :mod:`cfdan.paths`, :mod:`cfdan.atomic`, :mod:`cfdan.paper` (the paper's own
  numbers), :mod:`cfdan.safe_load`, :mod:`cfdan.results` (the run store);
* :mod:`cfdan.pcp` (§3.4, the PCP activation: op, kernels, SymPy derivation, its claims);
* :mod:`cfdan.model` (§3.1-3.4: trunk, attention, distillation, cross-fusion, ILM, CF-DAN);
* :mod:`cfdan.data` (§4.1-4.2: FERPlus, RAF-DB, AffectNet, synthetic, MTCNN, pipeline);
* :mod:`cfdan.training` (§4.2: config, loop, evaluate, sweep, provenance, distributed);
* :mod:`cfdan.analysis` (§4.3-4.5: runs, claims, tables, what the chapters show);
* :mod:`cfdan.predict` and :mod:`cfdan.cli` (the command line).

The README's "Where things are" maps each paper section to its module, chapter and tests.
"""

__version__ = "0.1.0"
