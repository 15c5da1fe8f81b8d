"""Entry point: `python hack/cluster/node_agent ...` (what up.sh runs), or
`python -m node_agent ...` with hack/cluster on sys.path."""
import sys
from pathlib import Path

if not __package__:
    # Run by path: sys.path[0] is this directory, whose modules (env, node, ...) must not
    # shadow top-level ones, so the package is imported from its parent directory instead.
    # Done here rather than with PYTHONPATH, which the pods' processes would inherit.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from node_agent.agent import main  # noqa: E402

main()
