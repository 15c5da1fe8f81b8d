"""kubetune's Grafana dashboard and Prometheus alerting rules, generated as code.

`make dashboards` (python -m monitoring) writes charts/kubetune/files/dashboards/kubetune.json
and charts/kubetune/files/prometheus-rules.yaml; tests fail when those files are stale, check
the rules with promtool, and run every query against a real Prometheus scraping the operator.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_PATH = ROOT / "charts" / "kubetune" / "files" / "dashboards" / "kubetune.json"
RULES_PATH = ROOT / "charts" / "kubetune" / "files" / "prometheus-rules.yaml"
