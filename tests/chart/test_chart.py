"""charts/kubetune with the real Helm (helm-sdkpy), no cluster: lint, what it renders, its
values schema, and manifests/ (rendered from it) not being stale."""
from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from conftest import CHART, MONITORING, ROOT, TOGGLES, by_kind, helm, notes, one, rejected, render

DEFAULT_KINDS = {"CustomResourceDefinition": 4, "ServiceAccount": 1, "ClusterRole": 3, "ClusterRoleBinding": 1,
                 "Service": 2, "Deployment": 1, "ValidatingWebhookConfiguration": 1, "Secret": 1}
CERT_MANAGER = "cert-manager.io/v1"
USERNAME_ARG = "--operator-username=system:serviceaccount:kubetune-system:kubetune-operator"
# The chart owns the webhook configuration and certificate: the operator only serves.
WEBHOOK_ARGS = ["--webhook-port=9443", "--webhook-address=0.0.0.0", "--webhook-cert-file=/etc/kubetune/webhook/tls.crt",
                "--webhook-key-file=/etc/kubetune/webhook/tls.key"]


def kinds(objects):
    counts = {}
    for obj in objects:
        counts[obj["kind"]] = counts.get(obj["kind"], 0) + 1
    return counts


def service(objects, name="kubetune-operator-metrics"):
    (svc,) = [s for s in by_kind(objects, "Service") if s["metadata"]["name"] == name]
    return svc


def container(objects):
    return one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def operator_role(objects):
    (role,) = [r for r in by_kind(objects, "ClusterRole") if r["metadata"]["name"] == "kubetune-operator"]
    return role


def test_lint_passes():
    result = helm("lint", str(CHART), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_defaults_render_the_operator_and_its_crds():
    objects = render()
    assert kinds(objects) == DEFAULT_KINDS
    assert {o["metadata"]["name"] for o in by_kind(objects, "CustomResourceDefinition")} == {
        "finetunejobs.kubetune.io", "evaljobs.kubetune.io", "clustertrainingruntimes.kubetune.io", "trainingruntimes.kubetune.io"}
    # The names the local tooling (hack/operator.sh) and the docs rely on.
    assert one(objects, "ServiceAccount")["metadata"] == {**one(objects, "ServiceAccount")["metadata"],
                                                          "name": "kubetune-operator", "namespace": "kubetune-system"}
    assert sorted(s["metadata"]["name"] for s in by_kind(objects, "Service")) == [
        "kubetune-operator-metrics", "kubetune-operator-webhook"]
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "kubetune-operator"


def test_crds_are_kept_on_uninstall_by_default_and_optional():
    for crd in by_kind(render(), "CustomResourceDefinition"):
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for crd in by_kind(render({"crds": {"keep": False}}), "CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})
    assert not by_kind(render({"crds": {"install": False}}), "CustomResourceDefinition")


def test_crds_are_the_generated_ones():
    from kubetune_api import crdgen

    generated = {name[:-len(".yaml")]: yaml.safe_load(text) for name, text in crdgen.rendered().items()}
    for crd in by_kind(render(), "CustomResourceDefinition"):
        assert json.loads(json.dumps(crd["spec"])) == json.loads(json.dumps(generated[crd["metadata"]["name"]]["spec"]))


@pytest.mark.parametrize("toggle", sorted(TOGGLES))
def test_each_toggle_is_off_by_default_and_renders_its_object(toggle):
    values, kind = TOGGLES[toggle]
    assert kind not in kinds(render()) or kind == "ConfigMap" and not by_kind(render(), "ConfigMap")
    objects = render(values, api_versions=(MONITORING,))
    (obj,) = by_kind(objects, kind)
    assert obj["metadata"]["namespace"] == "kubetune-system"
    assert kinds(objects) == {**DEFAULT_KINDS, kind: 1}


def test_grafana_dashboard_configmap_is_labelled_for_the_sidecar_and_holds_the_dashboards():
    cm = one(render({"grafanaDashboard": {"enabled": True, "namespace": "monitoring",
                                          "annotations": {"grafana_folder": "kubetune"}}}), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "kubetune"}
    files = sorted((CHART / "files" / "dashboards").glob("*.json"))
    assert sorted(cm.get("data") or {}) == [f.name for f in files]
    for f in files:
        assert json.loads(cm["data"][f.name]) == json.loads(f.read_text())


def test_prometheus_rule_holds_the_chart_rules():
    rule = one(render({"prometheusRule": {"enabled": True, "labels": {"release": "prom"}}}, (MONITORING,)),
               "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prom"
    source = CHART / "files" / "prometheus-rules.yaml"
    if source.exists():
        data = yaml.safe_load(source.read_text())
        assert rule["spec"]["groups"] == (data.get("spec") or data)["groups"]


def test_monitors_scrape_the_metrics_port():
    objects = render({"metrics": {"serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "p"}},
                                  "podMonitor": {"enabled": True}}}, (MONITORING,))
    sm, pm = one(objects, "ServiceMonitor"), one(objects, "PodMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics" and sm["spec"]["endpoints"][0]["interval"] == "15s"
    assert sm["metadata"]["labels"]["release"] == "p"
    assert sm["spec"]["selector"]["matchLabels"] == service(objects)["spec"]["selector"]
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert pm["spec"]["selector"]["matchLabels"] == one(objects, "Deployment")["spec"]["selector"]["matchLabels"]


def test_network_policy_admits_only_the_metrics_health_and_webhook_ports():
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    policy = one(render({"networkPolicy": {"enabled": True, "metricsFrom": [peer]}}), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert [r["ports"][0]["port"] for r in policy["spec"]["ingress"]] == ["metrics", "health", "webhook"]
    assert policy["spec"]["ingress"][0]["from"] == [peer]


def test_restricted_security_context_liveness_and_resources():
    objects = render()
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    c = container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in sc
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 8080, "health": 8081, "webhook": 9443}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert one(objects, "Deployment")["spec"]["strategy"]["type"] == "Recreate"


def test_operator_settings_come_from_values():
    c = container(render())
    assert c["image"] == "ghcr.io/kubetune/operator:0.1.0"  # the tag defaults to appVersion
    assert c["command"] == ["kubetune-operator"]
    assert c["args"] == ["--metrics-port=8080", "--metrics-address=0.0.0.0", "--health-port=8081",
                         "--trainer-image=ghcr.io/kubetune/trainer:0.1.0", "--workers=8", "--currency=USD",
                         USERNAME_ARG, *WEBHOOK_ARGS]
    c = container(render({"watchNamespaces": ["team-a", "team-b"], "workers": 3, "verbose": True,
                          "trainerImage": "registry.example/trainer:1.2", "metrics": {"port": 9090},
                          "health": {"port": 9091}, "image": {"tag": "0.2.0"},
                          "pricing": {"gpuHour": 2.5, "currency": "EUR"}}))
    assert c["image"] == "ghcr.io/kubetune/operator:0.2.0"
    assert c["args"] == ["--namespace=team-a", "--namespace=team-b", "--metrics-port=9090",
                         "--metrics-address=0.0.0.0", "--health-port=9091",
                         "--trainer-image=registry.example/trainer:1.2", "--workers=3", "--gpu-hour-price=2.5",
                         "--currency=EUR", "-v", USERNAME_ARG, *WEBHOOK_ARGS]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 9090, "health": 9091, "webhook": 9443}


def test_cluster_wide_rbac_is_one_cluster_role():
    objects = render()
    assert not by_kind(objects, "Role") and not by_kind(objects, "RoleBinding")
    rules = operator_role(objects)["rules"]
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    for need in [("kubetune.io", "finetunejobs", "watch"), ("kubetune.io", "evaljobs", "create"),
                 ("kubetune.io", "finetunejobs/status", "patch"), ("batch", "jobs", "create"),
                 ("batch", "jobs", "patch"), ("", "pods", "watch"), ("", "pods/log", "get"),
                 ("networking.k8s.io", "networkpolicies", "create"), ("", "events", "create"),
                 ("events.k8s.io", "events", "create"), ("", "namespaces", "watch"), ("", "events", "list")]:
        assert need in granted, need
    # Least privilege: nothing beyond what it uses; no wildcards, secrets, escalate or bind. It
    # deletes only what it runs: an attempt's Job (spec.suspend) and its own kinds (TTL).
    assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in rules)
    assert not {v for _, _, v in granted} & {"deletecollection", "escalate", "bind", "impersonate"}
    assert {(g, r) for g, r, v in granted if v == "delete"} == {
        ("batch", "jobs"), ("kubetune.io", "finetunejobs"), ("kubetune.io", "evaljobs")}
    assert not {r for _, r, _ in granted} & {"secrets", "pods/exec", "serviceaccounts", "roles", "rolebindings",
                                             "validatingwebhookconfigurations", "mutatingwebhookconfigurations"}


def test_watch_namespaces_get_roles_and_no_cluster_wide_access_to_them():
    objects = render({"watchNamespaces": ["team-a", "team-b"]})
    assert [r["metadata"]["namespace"] for r in by_kind(objects, "Role")] == ["team-a", "team-b"]
    assert [b["metadata"]["namespace"] for b in by_kind(objects, "RoleBinding")] == ["team-a", "team-b"]
    for binding in by_kind(objects, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubetune-operator",
                                        "namespace": "kubetune-system"}]
    cluster_rules = operator_role(objects)["rules"]
    assert cluster_rules == [{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
                              "verbs": ["get", "list", "watch"]},
                             {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
                             {"apiGroups": ["kubetune.io"], "resources": ["clustertrainingruntimes"], "verbs": ["get"]}]
    cluster_wide = (["customresourcedefinitions"], ["namespaces"], ["clustertrainingruntimes"])
    assert by_kind(objects, "Role")[0]["rules"] == [r for r in operator_role(render())["rules"]
                                             if r["resources"] not in cluster_wide]


def _pem(b64):
    import base64

    from cryptography import x509

    return x509.load_pem_x509_certificate(base64.b64decode(b64))


def test_the_chart_owns_the_whole_webhook_configuration_and_its_certificate():
    """Rules, failurePolicy, timeout and caBundle are rendered (the same webhooks webhook.py
    makes in self-managed mode), with a CA and serving certificate in a kubernetes.io/tls
    Secret mounted into the operator, which has no RBAC on any webhook configuration."""
    from cryptography.x509 import DNSName, SubjectAlternativeName

    from kubetune_operator import admission, webhook

    objects = render()
    vwc = one(objects, "ValidatingWebhookConfiguration")
    secret = one(objects, "Secret")
    assert (secret["metadata"]["name"], secret["type"]) == ("kubetune-operator-webhook-tls", "kubernetes.io/tls")
    assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    target = webhook.Target.parse(9443, service="kubetune-system/kubetune-operator-webhook")
    expected = webhook.webhooks(target, admission.HANDLER_IDS, b"", "Fail", 10, admission.STATUS_HANDLER_ID)
    for hook in expected:
        hook["clientConfig"]["caBundle"] = secret["data"]["ca.crt"]
    assert vwc["webhooks"] == expected
    assert [h["name"] for h in vwc["webhooks"]] == ["finetunejobs.kubetune.io", "evaljobs.kubetune.io",
                                                   "status.kubetune.io"]
    ca, cert = _pem(secret["data"]["ca.crt"]), _pem(secret["data"]["tls.crt"])
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(SubjectAlternativeName).value.get_values_for_type(DNSName)
    assert "kubetune-operator-webhook.kubetune-system.svc" in sans
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "webhook-tls", "secret": {"secretName": "kubetune-operator-webhook-tls", "defaultMode": 0o444}} \
        in pod["volumes"]
    assert {"name": "webhook-tls", "mountPath": "/etc/kubetune/webhook", "readOnly": True} \
        in pod["containers"][0]["volumeMounts"]
    assert not any(r for r in operator_role(objects)["rules"] if "admissionregistration.k8s.io" in r["apiGroups"])
    webhook_svc = service(objects, "kubetune-operator-webhook")
    assert webhook_svc["spec"]["ports"] == [{"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}]
    assert webhook_svc["spec"]["selector"] == one(objects, "Deployment")["spec"]["selector"]["matchLabels"]


def test_the_operator_is_ready_when_its_webhook_listens():
    c = container(render())
    assert c["readinessProbe"]["tcpSocket"] == {"port": "webhook"}
    off = container(render({"webhook": {"enabled": False}}))
    assert off["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_webhook_values():
    objects = render({"webhook": {"failurePolicy": "Ignore", "timeoutSeconds": 3, "port": 10443,
                                  "service": {"port": 8443}}})
    assert "--webhook-port=10443" in container(objects)["args"]
    for hook in one(objects, "ValidatingWebhookConfiguration")["webhooks"]:
        assert (hook["failurePolicy"], hook["timeoutSeconds"], hook["clientConfig"]["service"]["port"]) == \
            ("Ignore", 3, 8443)
    on_host = render({"webhook": {"host": "127.0.0.1"}})  # an operator on the host network: no Service
    hooks = one(on_host, "ValidatingWebhookConfiguration")["webhooks"]
    assert [h["clientConfig"]["url"] for h in hooks] == [
        "https://127.0.0.1:9443/validate-finetunejob", "https://127.0.0.1:9443/validate-evaljob",
        "https://127.0.0.1:9443/validate-status"]
    assert [s["metadata"]["name"] for s in by_kind(on_host, "Service")] == ["kubetune-operator-metrics"]
    assert not [a for a in container(on_host)["args"] if a.startswith(("--webhook-host", "--webhook-service"))]
    off = render({"webhook": {"enabled": False}})
    assert not by_kind(off, "ValidatingWebhookConfiguration") and len(by_kind(off, "Service")) == 1
    assert not by_kind(off, "Secret")
    assert not [a for a in container(off)["args"] if a.startswith("--webhook")]
    assert USERNAME_ARG in container(off)["args"]


def test_cert_manager_issues_the_certificate_and_injects_the_ca():
    objects = render({"webhook": {"certManager": {"enabled": True}}}, api_versions=(CERT_MANAGER,))
    assert not by_kind(objects, "Secret")  # cert-manager writes it
    cert = one(objects, "Certificate")
    assert cert["spec"]["secretName"] == "kubetune-operator-webhook-tls"
    assert cert["spec"]["dnsNames"] == ["kubetune-operator-webhook.kubetune-system.svc",
                                        "kubetune-operator-webhook.kubetune-system.svc.cluster.local"]
    assert cert["spec"]["issuerRef"] == {"name": "kubetune-operator-webhook", "kind": "Issuer", "group": "cert-manager.io"}
    assert one(objects, "Issuer")["spec"] == {"selfSigned": {}}
    vwc = one(objects, "ValidatingWebhookConfiguration")
    assert vwc["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": "kubetune-system/kubetune-operator-webhook"}
    assert all("caBundle" not in h["clientConfig"] for h in vwc["webhooks"]) and len(vwc["webhooks"]) == 3
    assert container(objects)["args"][-4:] == WEBHOOK_ARGS
    own = render({"webhook": {"certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}}},
                 api_versions=(CERT_MANAGER,))
    assert not by_kind(own, "Issuer")
    assert one(own, "Certificate")["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer",
                                                           "group": "cert-manager.io"}


def test_tenant_roles_aggregate_into_edit_and_view_without_status():
    roles = {r["metadata"]["name"]: r for r in by_kind(render(), "ClusterRole")}
    edit, view = roles["kubetune-edit"], roles["kubetune-view"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    for role in (edit, view):
        resources = {r for rule in role["rules"] for r in rule["resources"]}
        # Never finetunejobs/status, evaljobs/status; runtimes (the admins') read-only.
        assert resources == {"finetunejobs", "evaljobs", "clustertrainingruntimes", "trainingruntimes"}
        runtime_verbs = {v for rule in role["rules"] if "trainingruntimes" in rule["resources"] for v in rule["verbs"]}
        assert runtime_verbs == {"get", "list", "watch"}
        assert all(rule["apiGroups"] == ["kubetune.io"] for rule in role["rules"])
    assert {"create", "patch", "delete"} <= {v for rule in edit["rules"] for v in rule["verbs"]}
    assert {v for rule in view["rules"] for v in rule["verbs"]} == {"get", "list", "watch"}
    assert [r["metadata"]["name"] for r in by_kind(render({"rbac": {"tenantRoles": False}}), "ClusterRole")] == [
        "kubetune-operator"]


def test_replica_count_zero_stops_the_operator():
    assert one(render({"replicaCount": 0}), "Deployment")["spec"]["replicas"] == 0


@pytest.mark.parametrize("values, field", [
    ({"workers": "many"}, "/workers"),
    ({"replicaCont": 1}, "replicaCont"),
    ({"replicaCount": 2}, "/replicaCount"),
    ({"metrics": {"port": 0}}, "/metrics/port"),
    ({"metrics": {"serviceMonitor": {"enabeld": True}}}, "enabeld"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
    ({"crds": {"keep": "yes"}}, "/crds/keep"),
    ({"trainerImage": ""}, "/trainerImage"),
    ({"pricing": {"gpuHour": "cheap"}}, "/pricing/gpuHour"),
    ({"webhook": {"failurePolicy": "Maybe"}}, "/webhook/failurePolicy"),
    ({"webhook": {"timeoutSeconds": 60}}, "/webhook/timeoutSeconds"),
    ({"webhook": {"certManager": {"issuerRef": {"kind": "Vault"}}}}, "/webhook/certManager/issuerRef/kind"),
], ids=["workers-type", "unknown-key", "two-replicas", "port-range", "nested-typo", "enum", "namespace-name",
        "bool", "empty-image", "price-type", "failure-policy", "webhook-timeout", "issuer-kind"])
def test_values_outside_the_schema_fail_with_the_field_named(values, field):
    error = rejected(values)
    assert "schema" in error and field in error, error


def test_notes_say_how_to_apply_a_first_finetunejob():
    text = notes()
    assert "kind: FineTuneJob" in text and "kubectl apply" in text and "kubectl get ftj" in text
    assert "{{ instruction }}" in text  # the prompt template survives Helm's templating
    assert "-n team-a" in notes({"watchNamespaces": ["team-a"]})


def _manifests_module():
    spec = importlib.util.spec_from_file_location("kt_manifests", ROOT / "hack" / "helm" / "manifests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manifests_are_rendered_from_the_chart():
    """manifests/ (the kustomize base) is `make manifests`: the chart with default values, but
    cert-manager's webhook certificate (deterministic; no private key in Git)."""
    module = _manifests_module()
    problems = module.stale(module.rendered(), module.on_disk())
    assert not problems, "manifests/ is stale: run `make manifests`\n" + "\n".join(problems)
    kustomization = yaml.safe_load((ROOT / "manifests" / "kustomization.yaml").read_text())
    listed = {obj["kind"] for path in kustomization["resources"]
              for obj in yaml.safe_load_all((ROOT / "manifests" / path).read_text()) if obj}
    assert listed == {"Namespace", "Certificate", "Issuer", *DEFAULT_KINDS} - {"Secret"}
    assert not [p for p in (ROOT / "manifests").rglob("*.yaml") if "PRIVATE KEY" in p.read_text() or "kind: Secret" in p.read_text()]


def test_node_agent_runs_operator_images_from_the_operator_venv():
    """The local cluster's stand-in for images: the chart's operator image runs .venv-operator."""
    import sys

    sys.path.insert(0, str(ROOT / "hack" / "cluster"))
    from node_agent.env import base_env, image_bindir

    operator_bin = str(ROOT / ".venv-operator" / "bin")
    if (ROOT / ".venv-operator" / "bin").is_dir():
        assert image_bindir("ghcr.io/kubetune/operator:0.1.0") == operator_bin
        assert image_bindir("localhost:5000/kubetune/operator@sha256:abc") == operator_bin
        assert base_env("p", "ghcr.io/kubetune/operator")["PATH"].startswith(operator_bin + ":")
    for image in ("ghcr.io/kubetune/trainer:0.1.0", "operator", "ghcr.io/x/operator-sdk:1", ""):
        assert image_bindir(image) == str(Path(sys.executable).parent), image


from pathlib import Path  # noqa: E402
