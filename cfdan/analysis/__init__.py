"""§4.3-4.5: what the recorded runs say, for the chapters.

:mod:`~cfdan.analysis.runs` (the run table: one row per record, which count, and how they
pair by seed and recipe; every table and figure is a view of it),
:mod:`~cfdan.analysis.claims` (the claims ledger and its verdicts),
:mod:`~cfdan.analysis.presets` (a paper table's presets as a group),
:mod:`~cfdan.analysis.power` (the seeds each claim would need),
:mod:`~cfdan.analysis.prose` (the ledger in words),
:mod:`~cfdan.analysis.tables` (Tables 1-5 and the runs' provenance),
:mod:`~cfdan.analysis.book` (the numbers each chapter glues), and the figures of the same runs:
:mod:`~cfdan.analysis.figures` (Figs. 5-7), :mod:`~cfdan.analysis.attention_maps` (Fig. 8),
:mod:`~cfdan.analysis.sensitivity` (Fig. 10); :mod:`~cfdan.analysis.search` (chapter 5's
search for the cpu profile). Analysis functions return numbers and verdicts; sentences live in
the chapters.
"""
