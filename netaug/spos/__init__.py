"""Single Path One-Shot NAS over NetAug's augmented widths: path space and inherited-weight search.

The Ray Tune stages (supernet training trial, parallel candidate evaluation) build on this; see the
SPOS issue.
"""

from netaug.spos.astar import Astar, find_astar
from netaug.spos.search import Candidate, LocalScorer, PathEvaluator, evolution_search, uniform_search
from netaug.spos.space import PathSpace, path_id

__all__ = ["Astar", "Candidate", "LocalScorer", "PathEvaluator", "PathSpace", "evolution_search", "find_astar",
           "path_id", "uniform_search"]
