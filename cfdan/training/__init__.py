"""§4.2: how a run is configured, trained, evaluated and queued.

:mod:`~cfdan.training.config` (profiles, experiments, run identity), :mod:`~cfdan.training.loop`
(``train``: the recipe, read top to bottom), :mod:`~cfdan.training.recipe` (its pieces: model,
criterion, optimiser, schedule, augmentation, batches), :mod:`~cfdan.training.checkpoint`
(``last.pt``, ``best.pt``, resume), :mod:`~cfdan.training.evaluate` (metrics, TTA, bootstrap),
:mod:`~cfdan.training.sweep` (the resumable experiment queue),
:mod:`~cfdan.training.provenance` (code, data and hardware of a run),
:mod:`~cfdan.training.distributed` (DDP) and :mod:`~cfdan.training.probe` (data-pipeline
throughput against a training step).
"""
