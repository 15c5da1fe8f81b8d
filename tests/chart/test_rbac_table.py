"""The "Operator RBAC" table of docs/security.md lists exactly the rules the chart grants the operator
(both ways), and the default install holds no verb on what it must never touch."""
from __future__ import annotations

import re

from conftest import ROOT, by_kind, render

FORBIDDEN = {("", "secrets"), ("", "pods/exec"), ("", "serviceaccounts"),
             ("rbac.authorization.k8s.io", "roles"), ("rbac.authorization.k8s.io", "rolebindings"),
             ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
             ("admissionregistration.k8s.io", "mutatingwebhookconfigurations")}


def _operator_rules(objects):
    (role,) = [r for r in by_kind(objects, "ClusterRole") if r["metadata"]["name"] == "kubetune-operator"]
    return role["rules"] + [rule for r in by_kind(objects, "Role") for rule in r["rules"]]


def granted(rules) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


DOC = ROOT / "docs" / "security.md"


def doc_table() -> set[tuple[str, str, str]]:
    """(group, resource, verb) of every row of the Operator RBAC table in docs/security.md."""
    text = DOC.read_text()
    start = text.index("**Operator RBAC**")
    rows = set()
    for line in text[start:].splitlines()[1:]:
        line = line.strip()
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in ("API group", "---"):
            continue
        group = re.fullmatch(r"`([^`]*)`.*", cells[0]).group(1).strip('"')
        resource = cells[1].strip("`")
        for verb in (v.strip() for v in cells[2].split(",")):
            rows.add((group, resource, verb))
    return rows


def test_the_docs_table_lists_exactly_the_charts_rules():
    table, chart = doc_table(), granted(_operator_rules(render()))
    assert table, "no Operator RBAC table in docs/security.md"
    assert chart - table == set(), "granted by the chart but not in the docs/security.md table"
    assert table - chart == set(), "in the docs/security.md table but not granted by the chart"


def test_with_watch_namespaces_the_rules_are_the_same_split_in_roles():
    assert granted(_operator_rules(render({"watchNamespaces": ["team-a"]}))) == doc_table()


def test_nothing_forbidden_is_granted_in_any_install():
    for values in ({}, {"watchNamespaces": ["team-a"]}, {"webhook": {"enabled": False}},
                   {"webhook": {"host": "127.0.0.1"}}):
        objects = render(values)
        rules = [rule for kind in ("ClusterRole", "Role") for r in by_kind(objects, kind) for rule in r["rules"]]
        held = {(g, r) for g, r, _ in granted(rules)}
        assert not held & FORBIDDEN, (values, held & FORBIDDEN)
        assert not any("*" in rule["resources"] or "*" in rule["verbs"] or "*" in rule["apiGroups"] for rule in rules)


def test_tenant_roles_grant_no_status():
    for role in by_kind(render(), "ClusterRole"):
        if role["metadata"]["name"] in ("kubetune-edit", "kubetune-view"):
            assert not {r for _, r, _ in granted(role["rules"]) if r.endswith("/status")}
