"""`python -m monitoring [--check]`: writes (or checks) the generated dashboard and rules."""
from __future__ import annotations

import argparse
import sys

from monitoring import DASHBOARD_PATH, ROOT, RULES_PATH, dashboard, rules


def outputs() -> dict:
    return {DASHBOARD_PATH: dashboard.render(), RULES_PATH: rules.render()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitoring", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when a generated file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"stale: {', '.join(stale)}; run `make dashboards`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
