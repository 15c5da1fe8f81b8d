"""The PrometheusRules pass `promtool check rules` and the promtool unit tests in
monitoring/rules_test.yaml (promtool comes with Debian's prometheus package)."""
import shutil
import subprocess

import pytest

from monitoring import ROOT, RULES_PATH, rules


@pytest.fixture(scope="module")
def promtool():
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (hack/cluster/build.sh does)", pytrace=False)
    return path


def test_promtool_check_rules(promtool):
    result = subprocess.run([promtool, "check", "rules", str(RULES_PATH)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules.ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests(promtool):
    result = subprocess.run([promtool, "test", "rules", "monitoring/rules_test.yaml"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_promtool_test_and_probes_name_real_alerts():
    text = (ROOT / "monitoring" / "rules_test.yaml").read_text()
    names = [a["alert"] for a in rules.ALERTS]
    for name in names:
        assert f"alertname: {name}" in text, name
    assert set(rules.PROBES) <= set(names)
