"""Online experiments: A/B tests and interleaving between registered bundles.

Shared by both worlds, importing neither: the server (``feedrec.online``) routes requests with
``assignment`` and writes the ``exposures`` log; ``feedrec experiment analyze`` reads that log
and the event store with ``analysis`` (statistics in ``stats``, pure functions). Definitions and
their history live in the workspace (``store``)::

    <workspace>/experiments/state.json       every experiment's definition and status (atomic)
    <workspace>/experiments/history.jsonl    every create, start, stop, holdout change (fsync'ed)
    <workspace>/experiments/exposures/       what each experiment served, one line per feed
"""
