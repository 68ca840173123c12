"""feedrec: a personalized feed recommendation system.

The offline world (``feedrec.offline``) turns interaction events into evaluated, versioned models;
the online world (``feedrec.online``, later) serves them. Both share ``schemas``, ``data``,
``features``, ``models`` and ``metrics``.
"""

__version__ = "0.1.0"
