"""srgnn-pipeline: session-based next-item recommendations with SR-GNN.

Importing the package sets one thing: ``OMP_WAIT_POLICY=PASSIVE`` when the environment says
nothing about it, so that torch's OpenMP threads sleep instead of spinning while they wait
(OpenMP reads the variable once, when torch loads; why in :mod:`srgnn.cpu`).
"""

import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
