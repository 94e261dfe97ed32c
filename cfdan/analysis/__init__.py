"""§4.3-4.5: what the recorded runs say, for the chapters.

:mod:`~cfdan.analysis.claims` (the claims ledger and its verdicts),
:mod:`~cfdan.analysis.presets` (a paper table's presets as a group),
:mod:`~cfdan.analysis.tables` (Tables 1-5 and the figures' data) and
:mod:`~cfdan.analysis.book` (the numbers each chapter glues). Analysis functions return numbers
and verdicts; sentences live in the chapters.
"""
