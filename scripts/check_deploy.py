"""Checks the Helm chart, the alerts, the dashboard and the Dockerfile offline.

For each of three value sets — no values at all (the evaluation install), the chart's
values-production.yaml, and every option on (ingress, httpRoute, serviceMonitor, prometheusRule,
dashboard, admin API, Graph, extra volumes) —:
- `helm lint --strict` (Helm 4, embedded in helm-python-sdk);
- render, and validate every manifest against the Kubernetes 1.33 schemas (kubernetes-validate;
  CRD kinds without an offline schema — ServiceMonitor, PrometheusRule, HTTPRoute — are named
  and only parsed);
- pod hardening of every workload (Deployment, StatefulSet, Job, Pod): non-root, read-only root
  file system, no privilege escalation, all capabilities dropped, resources;
- feed the rendered config.toml, with the secret files and environment the Deployment would give,
  to `pimbridge check-config`: the chart must produce a configuration pimbridge accepts.
Then: the listeners' ports follow the configuration, the Ingress/HTTPRoute expose only the public
paths, checksums roll the pods, values.schema.json refuses bad values, the PrometheusRule is the
rules file with the release's job, `promtool check rules` / `promtool test rules` on the alerts,
the Grafana dashboard's queries (scripts/check_dashboard.py), the evaluation install started
locally with the commands of its NOTES.txt (scripts/eval_smoke.py), the Dockerfile's stubs, hadolint.

Usage: python scripts/check_deploy.py PIMBRIDGE_BINARY AWS_SCIM_EMULATOR_BINARY POSTGRES_URL
(POSTGRES_URL: a server whose user may create roles and databases, e.g. postgres://postgres@127.0.0.1:55433/postgres)
"""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import helm_python
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_dashboard  # noqa: E402
import eval_smoke  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(ROOT, "charts", "pimbridge")
RULES = os.path.join(CHART, "files", "pimbridge-rules.yaml")
RULE_TESTS = os.path.join(ROOT, "deploy", "prometheus", "tests")
BINARY, EMULATOR, POSTGRES_URL = sys.argv[1], sys.argv[2], sys.argv[3]
BIN = os.path.dirname(sys.executable)
PROMTOOL = shutil.which("promtool")
# Custom resources: no schema offline, so kubernetes-validate cannot check them.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "HTTPRoute"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "Pod"}
SECRETS_DIR = "/var/run/secrets/pimbridge"

ALL_ON = {
    "evaluation": {"enabled": False},
    "config": {
        "applications": {
            "prod": {
                "scim_url": "https://scim.eu-west-1.amazonaws.com/abc1234567-1111-2222-3333-444444444444/scim/v2",
                "groups": ["6f1f6d3e-0000-4000-8000-00000000a0a0"],
            },
            "sandbox": {
                "scim_url": "https://scim.us-east-1.amazonaws.com/def1234567-1111-2222-3333-444444444444/scim/v2",
                "groups": ["6f1f6d3e-0000-4000-8000-00000000b0b0"],
                "activation_limit": 5,
                "requests_burst": 10,
            },
        },
        "graph": {
            "tenant_id": "11111111-2222-3333-4444-555555555555",
            "client_id": "66666666-7777-8888-9999-000000000000",
        },
    },
    "secrets": {
        "databaseUrl": "postgres://pimbridge:pw@db.example:5432/pimbridge",
        "hmacSecret": "a-production-hmac-secret-0123456789",
        "scimTokens": {"prod": "token-prod", "sandbox": "token-sandbox"},
        "adminToken": "a-production-admin-token-0123456789",
        "graphClientSecret": "graph-secret",
        "graphClientState": "a-graph-client-state-0123456789",
    },
    "adminApi": {"enabled": True},
    "serviceMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True, "latencyThresholdSeconds": 30},
    "dashboard": {"enabled": True},
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "hosts": ["pimbridge.example.com"],
        "tls": [{"secretName": "pimbridge-tls", "hosts": ["pimbridge.example.com"]}],
    },
    "httpRoute": {
        "enabled": True,
        "parentRefs": [{"name": "public", "namespace": "gateway-system"}],
        "hostnames": ["pimbridge.example.com"],
    },
    "extraVolumes": [{"name": "rds-ca", "configMap": {"name": "rds-ca-bundle"}}],
    "extraVolumeMounts": [{"name": "rds-ca", "mountPath": "/etc/pimbridge-ca", "readOnly": True}],
}
with open(os.path.join(CHART, "values-production.yaml")) as f:
    PRODUCTION = yaml.safe_load(f)

failures = []


def check(condition, message):
    print(("ok   " if condition else "FAIL ") + message)
    if not condition:
        failures.append(message)
    return condition


def render(values, name="pimbridge"):
    chart = helm_python.Chart.load(CHART)
    try:
        return chart.render(values, name=name, namespace="iam", is_install=True)
    finally:
        chart.close()


def documents(manifests):
    docs = []
    for path, text in manifests.items():
        if not path.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def find(docs, kind, name=None):
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def is_hook(doc):
    return "helm.sh/hook" in (doc["metadata"].get("annotations") or {})


def pod_spec(doc):
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def hardened(doc):
    """What is missing from a workload's hardening (empty when none)."""
    spec = pod_spec(doc)
    pod = spec.get("securityContext") or {}
    missing = []
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        ctx = container.get("securityContext") or {}
        where = f"{doc['kind']}/{doc['metadata']['name']}/{container['name']}"
        if not (ctx.get("runAsNonRoot") or pod.get("runAsNonRoot")):
            missing.append(f"{where}: runAsNonRoot")
        if (ctx.get("runAsUser", pod.get("runAsUser")) or 0) == 0:
            missing.append(f"{where}: a non-zero runAsUser")
        if ctx.get("readOnlyRootFilesystem") is not True:
            missing.append(f"{where}: readOnlyRootFilesystem")
        if ctx.get("allowPrivilegeEscalation") is not False:
            missing.append(f"{where}: allowPrivilegeEscalation: false")
        if "ALL" not in ((ctx.get("capabilities") or {}).get("drop") or []):
            missing.append(f"{where}: capabilities.drop [ALL]")
        if ctx.get("privileged"):
            missing.append(f"{where}: not privileged")
        resources = container.get("resources") or {}
        if not (resources.get("requests", {}).get("cpu") and resources.get("requests", {}).get("memory")
                and resources.get("limits", {}).get("memory")):
            missing.append(f"{where}: resources (cpu and memory requests, memory limit)")
    if not (pod.get("seccompProfile") or {}).get("type"):
        missing.append(f"{doc['kind']}/{doc['metadata']['name']}: a seccompProfile")
    return missing


def check_config(label, docs, expected_apps):
    """Runs `pimbridge check-config` on the rendered configuration, with the pods' environment."""
    deployment = find(docs, "Deployment", "pimbridge")[0]
    container = pod_spec(deployment)["containers"][0]
    configmap = next(d for d in find(docs, "ConfigMap") if not is_hook(d) and "config.toml" in d.get("data", {}))
    secrets = {d["metadata"]["name"]: d.get("stringData", {}) for d in find(docs, "Secret") if not is_hook(d)}
    with tempfile.TemporaryDirectory() as tmp:
        secrets_dir = os.path.join(tmp, "secrets")
        os.makedirs(secrets_dir)
        mounted = secrets.get(next(v["secret"]["secretName"] for v in pod_spec(deployment)["volumes"] if v["name"] == "secrets"))
        config = configmap["data"]["config.toml"]
        config_path = os.path.join(tmp, "config.toml")
        with open(config_path, "w") as f:
            f.write(config)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIMBRIDGE_")}
        for item in container["env"]:
            if "valueFrom" in item and "secretKeyRef" in item["valueFrom"]:
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = secrets[ref["name"]][ref["key"]]
            elif "value" in item:
                value = re.sub(r"\$\(([A-Za-z0-9_]+)\)", lambda m: env[m.group(1)], item["value"])
                if value.startswith(SECRETS_DIR + "/"):
                    key = value[len(SECRETS_DIR) + 1:]
                    # An existing Secret is not rendered: stand-in values of the right shape.
                    content = (mounted or {}).get(key) or (
                        "postgres://pimbridge:pw@db.example:5432/pimbridge" if key == "database-url" else f"stand-in-{key}-0123456789")
                    with open(os.path.join(secrets_dir, key), "w") as f:
                        f.write(content)
                    value = os.path.join(secrets_dir, key)
                env[item["name"]] = value.replace("/etc/pimbridge/config.toml", config_path)
        # Files the pods get from extra volumes (a CA bundle) are not on this machine: stand-ins.
        for key in re.findall(r'(?m)^\s*(ca_file) = "', config):
            stand_in = os.path.join(tmp, key)
            open(stand_in, "w").close()
            config = re.sub(rf'(?m)^(\s*{key}) = ".*"$', rf'\1 = "{stand_in}"', config)
        with open(config_path, "w") as f:
            f.write(config)
        result = subprocess.run([BINARY, "check-config"], env=env, capture_output=True, text=True)
        check(result.returncode == 0 and f"{expected_apps} application(s)" in result.stdout,
              f"{label}: pimbridge check-config accepts the chart's configuration with the pods' files and environment: "
              + (result.stdout + result.stderr).strip())


def validate(label, docs):
    core = [d for d in docs if d["kind"] not in CRD_KINDS]
    skipped = sorted({d["kind"] for d in docs if d["kind"] in CRD_KINDS})
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "manifests.yaml")
        with open(out, "w") as f:
            yaml.safe_dump_all(core, f)
        result = subprocess.run([os.path.join(BIN, "kubernetes-validate"), "-k", "1.33.0", "--strict", out],
                                capture_output=True, text=True)
    note = f" (not validated, no offline schema for these custom resources: {', '.join(skipped)})" if skipped else ""
    output = (result.stdout + result.stderr).strip()
    check(result.returncode == 0,
          f"{label}: kubernetes-validate --strict (1.33) on {len(core)} manifests{note}: "
          + ("all passed" if result.returncode == 0 else output[-800:]))


def scenario(label, values, expected_apps):
    """Lint, render, validate, harden and load one value set; returns its manifests."""
    print(f"\n== {label}")
    report = helm_python.lint(CHART, values, strict=True, namespace="iam", kube_version="v1.33.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    check(not problems, f"{label}: helm lint --strict: {problems or 'clean'}")
    docs = documents(render(values))
    print(f"     rendered: {', '.join(sorted(d['kind'] + '/' + d['metadata']['name'] for d in docs))}")
    validate(label, docs)
    workloads = [d for d in docs if d["kind"] in WORKLOAD_KINDS]
    missing = [m for d in workloads for m in hardened(d)]
    check(workloads and not missing,
          f"{label}: hardening of {len(workloads)} workloads ({', '.join(d['kind'] + '/' + d['metadata']['name'] for d in workloads)}): missing {missing or 'nothing'}")
    check_config(label, docs, expected_apps)
    return docs


# 1. The evaluation install: no values at all.
docs = scenario("no values (evaluation install)", {}, 1)
kinds = {d["kind"] for d in docs}
check({"Deployment", "StatefulSet", "Service", "Secret", "ConfigMap", "PodDisruptionBudget"} <= kinds
      and not find(docs, "Job") and not (kinds & CRD_KINDS) and not find(docs, "Ingress"),
      "evaluation: pimbridge, the Postgres StatefulSet and the emulator; no migration hook, no CRDs, no Ingress")
postgres = find(docs, "StatefulSet", "pimbridge-postgres")
check(bool(postgres) and postgres[0]["spec"]["template"]["spec"]["containers"][0]["image"].startswith("postgres:")
      and postgres[0]["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data",
      "evaluation: the official postgres image with a PersistentVolumeClaim")
emulator = find(docs, "Deployment", "pimbridge-scim-emulator")
check(bool(emulator) and pod_spec(emulator[0])["containers"][0]["command"] == ["/usr/local/bin/aws-scim-emulator"]
      and pod_spec(emulator[0])["containers"][0]["image"] == pod_spec(find(docs, "Deployment", "pimbridge")[0])["containers"][0]["image"],
      "evaluation: the emulator runs from the pimbridge image")
config_toml = next(d for d in find(docs, "ConfigMap", "pimbridge"))["data"]["config.toml"]
check('scim_url = "http://pimbridge-scim-emulator:9080/' in config_toml, "evaluation: the demo application points at the emulator")
env = {e["name"]: e for e in pod_spec(find(docs, "Deployment", "pimbridge")[0])["containers"][0]["env"]}
check("@pimbridge-postgres:5432/pimbridge" in env["PIMBRIDGE_DATABASE__URL"]["value"]
      and env["EVALUATION_POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "pimbridge-postgres",
      "evaluation: the database URL points at the evaluation Postgres, its password from the Postgres Secret")
selectors = {d["metadata"]["name"]: d["spec"]["selector"] for d in find(docs, "Service")}
check(len(set(map(str, selectors.values()))) == len(selectors), "evaluation: each Service selects its own pods only")
notes = render({})["pimbridge/templates/NOTES.txt"]
check("EVALUATION" in notes and "port-forward" in notes and "x-pimbridge-signature" in notes and "existingSecret" in notes,
      "NOTES.txt: says it is an evaluation, shows the signed sample event and the way to production")

# 2. values-production.yaml.
docs = scenario("values-production.yaml", PRODUCTION, len(PRODUCTION["config"]["applications"]))
check(not [d for d in docs if "evaluation" in str(d["metadata"].get("labels"))],
      "production: nothing of the evaluation set-up")
check(not find(docs, "Secret"), "production: existingSecret, so no Secret is rendered")

# 3. Every option on.
docs = scenario("every option on", ALL_ON, 2)
kinds = {d["kind"] for d in docs}
check({"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget", "Job", "ServiceMonitor",
       "PrometheusRule", "Ingress", "HTTPRoute"} <= kinds, f"every option on: rendered kinds {sorted(kinds)}")
deployment = find(docs, "Deployment", "pimbridge")[0]
container = pod_spec(deployment)["containers"][0]
ports = {p["name"]: p["containerPort"] for p in container["ports"]}
check(ports == {"http": 8080, "internal": 9090}, f"container ports http/internal from the default listeners: {ports}")
check(container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
      and container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"},
      "probes on /health/ready and /health/live of the public port")
service = find(docs, "Service", "pimbridge")[0]
check({(p["name"], p["targetPort"]) for p in service["spec"]["ports"]} == {("http", "http"), ("internal", "internal")},
      "the Service names both ports")
monitor = find(docs, "ServiceMonitor")[0]
check([e["port"] for e in monitor["spec"]["endpoints"]] == ["internal"], "the ServiceMonitor scrapes the internal port")
ingress = find(docs, "Ingress")[0]
paths = [(p["path"], p["backend"]["service"]["port"]) for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
check(paths == [("/v1/", {"name": "http"}), ("/webhooks/", {"name": "http"})],
      f"the Ingress routes only /v1/ and /webhooks/ to the public port: {paths}")
route = find(docs, "HTTPRoute")[0]
matches = [m["path"]["value"] for r in route["spec"]["rules"] for m in r["matches"]]
backends = [b["port"] for r in route["spec"]["rules"] for b in r["backendRefs"]]
check(matches == ["/v1/", "/webhooks/"] and backends == [8080],
      f"the HTTPRoute routes only /v1/ and /webhooks/ to the public port: {matches} → {backends}")
dashboard_cm = [d for d in find(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
with open(os.path.join(CHART, "dashboards", "pimbridge.json")) as f:
    dashboard_json = f.read()
check(bool(dashboard_cm) and dashboard_cm[0]["metadata"]["labels"].get("grafana_dashboard") == "1"
      and dashboard_cm[0]["data"]["pimbridge.json"].strip() == dashboard_json.strip(),
      "the dashboard ConfigMap (grafana_dashboard: \"1\") carries dashboards/pimbridge.json")
annotations = deployment["spec"]["template"]["metadata"]["annotations"]
check({"checksum/config", "checksum/secret"} <= set(annotations), "checksum annotations for the ConfigMap and the Secret")
changed = copy.deepcopy(ALL_ON)
changed["config"]["applications"]["prod"]["activation_limit"] = 4
after = find(documents(render(changed)), "Deployment", "pimbridge")[0]["spec"]["template"]["metadata"]["annotations"]
check(after["checksum/config"] != annotations["checksum/config"] and after["checksum/secret"] == annotations["checksum/secret"],
      "a configuration change changes checksum/config only")
changed = copy.deepcopy(ALL_ON)
changed["secrets"]["scimTokens"]["prod"] = "rotated-token"
after = find(documents(render(changed)), "Deployment", "pimbridge")[0]["spec"]["template"]["metadata"]["annotations"]
check(after["checksum/secret"] != annotations["checksum/secret"] and after["checksum/config"] == annotations["checksum/config"],
      "a secret change changes checksum/secret only")
check(any(m["name"] == "rds-ca" for m in container["volumeMounts"])
      and any(v["name"] == "rds-ca" for v in pod_spec(deployment)["volumes"]),
      "extra volumes (e.g. a CA bundle) are mounted")
job = find(docs, "Job")[0]
hook_secret = next(d for d in find(docs, "Secret") if is_hook(d))
main_secret = next(d for d in find(docs, "Secret") if not is_hook(d))
check(hook_secret["stringData"] == main_secret["stringData"], "the migration hook's Secret has the same keys as the Secret")
check(pod_spec(job)["containers"][0]["args"] == ["migrate"]
      and job["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") != "pimbridge",
      "the migration hook runs `migrate`, and neither the Service nor the PDB select its pod")

# Listeners follow the configuration.
moved = copy.deepcopy(ALL_ON)
moved["config"]["server"] = {"listen": "0.0.0.0:8000", "internal_listen": "[::]:9100"}
container = pod_spec(find(documents(render(moved)), "Deployment", "pimbridge")[0])["containers"][0]
ports = {p["name"]: p["containerPort"] for p in container["ports"]}
check(ports == {"http": 8000, "internal": 9100} and container["readinessProbe"]["httpGet"]["port"] == "http",
      f"listen 0.0.0.0:8000 / internal_listen [::]:9100 → container ports {ports}, probes on `http`")

# 4. The PrometheusRule is the rules file with this release's job, threshold and links.
with open(RULES) as f:
    source = yaml.safe_load(f)
rendered_rules = find(documents(render(ALL_ON, name="iam-bridge")), "PrometheusRule")[0]["spec"]
source_alerts = {r["alert"]: r for g in source["groups"] for r in g["rules"]}
rendered_alerts = {r["alert"]: r for g in rendered_rules["groups"] for r in g["rules"]}
check(set(source_alerts) == set(rendered_alerts), f"the PrometheusRule has every alert of the rules file: {sorted(rendered_alerts)}")
diverging = []
for name, rule in source_alerts.items():
    expected = copy.deepcopy(rule)
    expected["expr"] = rule["expr"].replace('job="pimbridge"', 'job="iam-bridge-pimbridge"')
    if name == "PimbridgeImmediateLaneSlow":
        expected["expr"] = re.sub(r"> *[0-9.]+\s*$", "> 30", expected["expr"])
    if expected != rendered_alerts.get(name):
        diverging.append(name)
check(not diverging, f"rendered for release iam-bridge, the alerts differ from the file only in the job and threshold: diverging {diverging or 'none'}")
check('absent(up{job="iam-bridge-pimbridge"} == 1)' == rendered_alerts["PimbridgeDown"]["expr"].strip(),
      "PimbridgeDown looks at the release's own job (its Service's name)")
anchors = set(re.findall(r"(?m)^#{2,4} (Pimbridge\w+)", open(os.path.join(ROOT, "docs", "operations.md")).read()))
links = {name: r["annotations"].get("runbook_url", "") for name, r in source_alerts.items()}
check(all(link.endswith("docs/operations.md#" + name.lower()) and name in anchors for name, link in links.items()),
      f"every alert has a runbook_url to its section of docs/operations.md: {sorted(set(links) - anchors) or 'all present'}")

# 5. Bad values are refused.
def refused(values, expected, label):
    try:
        render(values)
    except helm_python.HelmError as error:
        message = " ".join(str(error).split())
        check(expected in message, f"{label}: refused ({message[:160]}...)")
        return
    check(False, f"{label}: was accepted")


bad = copy.deepcopy(ALL_ON)
bad["config"]["applications"]["Prod-EU"] = bad["config"]["applications"].pop("prod")
refused(bad, "Prod-EU", "an application name env overrides cannot reach")
bad = copy.deepcopy(ALL_ON)
bad["config"]["database"] = {"url": "postgres://in-a-configmap"}
refused(bad, "database", "a database URL in the ConfigMap")
bad = copy.deepcopy(ALL_ON)
del bad["secrets"]["scimTokens"]["sandbox"]
refused(bad, "secrets.scimTokens.sandbox is required", "a missing SCIM token")
bad = copy.deepcopy(ALL_ON)
bad["secrets"]["databaseUrl"] = ""
refused(bad, "secrets.databaseUrl is required", "a missing database URL (production)")
bad = copy.deepcopy(ALL_ON)
bad["secrets"]["graphClientState"] = ""
refused(bad, "secrets.graphClientState is required", "Graph without its clientState")
bad = copy.deepcopy(ALL_ON)
bad["secrets"]["graphClientSecret"] = ""
refused(bad, "secrets.graphClientSecret is required", "Graph without any credential")
workload = copy.deepcopy(ALL_ON)
workload["secrets"]["graphClientSecret"] = ""
workload["config"]["graph"]["federated_token_file"] = "/var/run/secrets/azure/tokens/azure-identity-token"
rendered = render(workload)
check("graph-client-secret" not in rendered["pimbridge/templates/secret.yaml"]
      and "GRAPH__CLIENT_SECRET_FILE" not in rendered["pimbridge/templates/deployment.yaml"],
      "Graph with a federated token file needs no client secret")
bad = copy.deepcopy(ALL_ON)
bad["config"]["graph"]["client_secret"] = "in-a-configmap"
refused(bad, "graph", "a Graph secret in the ConfigMap")
bad = copy.deepcopy(ALL_ON)
bad["secrets"]["adminToken"] = ""
refused(bad, "secrets.adminToken is required", "the admin API without its token")
bad = copy.deepcopy(ALL_ON)
bad["config"]["admin"] = {"token": "in-a-configmap-0123456789"}
refused(bad, "admin", "an admin token in the ConfigMap")
bad = copy.deepcopy(ALL_ON)
bad["config"]["server"] = {"listen": "0.0.0.0:8080", "internal_lisen": "0.0.0.0:9090"}
refused(bad, "internal_lisen", "a misspelt configuration key")
bad = copy.deepcopy(ALL_ON)
bad["config"]["dispatch"] = {"lease_secs": 60}
refused(bad, "lease_secs", "a renamed configuration key")
bad = copy.deepcopy(ALL_ON)
bad["config"]["sync"] = {"check_interval": 5}
refused(bad, "check_interval", "a duration without its unit")
bad = copy.deepcopy(ALL_ON)
bad["config"]["server"] = {"listen": "0.0.0.0"}
refused(bad, "listen", "a listen address without a port")
bad = copy.deepcopy(ALL_ON)
bad["ingress"]["paths"] = ["/metrics"]
refused(bad, "paths", "extra Ingress paths")
existing = copy.deepcopy(ALL_ON)
existing["secrets"] = {"existingSecret": "pimbridge-prod"}
rendered = render(existing)
check(not any("kind: Secret" in text for text in rendered.values()) and "pimbridge-prod" in rendered["pimbridge/templates/deployment.yaml"],
      "existingSecret: no Secret rendered, the Deployment mounts the named one")

# The schema describes every value.
with open(os.path.join(CHART, "values.schema.json")) as f:
    schema = json.load(f)
undescribed = []


def walk(node, path):
    if not isinstance(node, dict):
        return
    if path and "description" not in node and node.get("type") is not None:
        undescribed.append(path)
    for key, child in (node.get("properties") or {}).items():
        walk(child, f"{path}.{key}" if path else key)
    if isinstance(node.get("additionalProperties"), dict):
        walk(node["additionalProperties"], path + ".*")
    if node.get("type") == "object" and path.startswith("config") and node.get("additionalProperties") is not False \
            and path not in ("config.applications",):
        undescribed.append(path + " (not strict)")


walk(schema, "")
check(not undescribed, f"values.schema.json describes every value, strictly inside config: {undescribed or 'yes'}")


def value_paths(node, path):
    """Every value path of the schema, `<name>` standing for map keys."""
    yield path
    for key, child in (node.get("properties") or {}).items():
        yield from value_paths(child, f"{path}.{key}" if path else key)
    if isinstance(node.get("additionalProperties"), dict):
        yield from value_paths(node["additionalProperties"], path + ".<name>")


# The schema's `config` mirrors pimbridge's settings structs (src/config/mod.rs) key by key: every
# field must be in the schema (or a key added to pimbridge could not be set through the chart), and
# every schema key must be a field (or pimbridge would refuse what the chart accepts). Left out on
# purpose: the secrets themselves (they come from the Secret as *_file paths) and a key pimbridge
# only reads to refuse it with its new name.
NOT_IN_SCHEMA = {"database.url", "intake.hmac_secret", "admin.token", "graph.client_secret", "graph.client_state",
                 "applications.<name>.scim_token", "intake.client_ip_header"}
def settings_keys():
    """Every configuration key of the settings structs, `<name>` standing for map keys."""
    with open(os.path.join(ROOT, "src", "config", "mod.rs")) as f:
        source = f.read()
    structs = {m.group(1): re.findall(r"^\s*pub (\w+):\s*([^\n]+?),?\s*$", m.group(2), re.MULTILINE)
               for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", source, re.DOTALL)}
    keys = set()

    def walk(struct, prefix):
        for name, field_type in structs[struct]:
            inner = next((word for word in re.findall(r"\w+", field_type) if word in structs), None)
            if inner:
                walk(inner, f"{prefix}{name}.<name>." if "BTreeMap" in field_type else f"{prefix}{name}.")
            else:
                keys.add(prefix + name)

    walk("Settings", "")
    return keys


fields = settings_keys()
schema_config = {p[len("config."):] for p in value_paths(schema, "") if p.startswith("config.")}
schema_leaves = {k for k in schema_config
                 if not any(other.startswith(k + ".") for other in schema_config)}
not_in_schema = sorted(fields - NOT_IN_SCHEMA - schema_leaves)
not_in_pimbridge = sorted(schema_leaves - fields)
check(len(fields) > 50 and not not_in_schema and not not_in_pimbridge,
      f"values.schema.json's config mirrors the {len(fields)} keys of src/config/mod.rs (secrets excepted): "
      f"missing from the schema {not_in_schema or 'none'}, unknown to pimbridge {not_in_pimbridge or 'none'}")

with open(os.path.join(CHART, "README.md")) as f:
    chart_readme = f.read()
paths = [p for p in value_paths(schema, "") if p]
absent = [p for p in paths if f"| `{p}` |" not in chart_readme]
check(not absent, f"charts/pimbridge/README.md describes all {len(paths)} values: missing {absent or 'none'}")

# 6. Alerts: promtool check rules and the unit tests.
check(PROMTOOL is not None, f"promtool is installed: {PROMTOOL}")
if PROMTOOL:
    result = subprocess.run([PROMTOOL, "check", "rules", RULES], capture_output=True, text=True)
    check(result.returncode == 0, "promtool check rules files/pimbridge-rules.yaml: " + (result.stdout + result.stderr).strip().replace("\n", " "))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rendered.rules.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(rendered_rules, f)
        result = subprocess.run([PROMTOOL, "check", "rules", path], capture_output=True, text=True)
        check(result.returncode == 0, "promtool check rules on the rendered PrometheusRule: " + (result.stdout + result.stderr).strip().replace("\n", " "))
    tests = sorted(os.path.join(RULE_TESTS, n) for n in os.listdir(RULE_TESTS) if n.endswith(".yaml"))
    result = subprocess.run([PROMTOOL, "test", "rules", *tests], capture_output=True, text=True)
    with open(tests[0]) as f:
        cases = len(yaml.safe_load(f)["tests"])
    check(result.returncode == 0, f"promtool test rules ({cases} cases, each alert firing and silent): " + " ".join((result.stdout + result.stderr).split())[-600:])

    # 7. The dashboard.
    issues, summary = check_dashboard.problems(promtool=PROMTOOL)
    check(not issues, f"dashboard queries parse and use only exported metrics and labels ({summary}): {issues or 'clean'}")

# 8. The evaluation install, started on this machine, does what its NOTES.txt says.
print("\n== the evaluation install, run locally with the commands of NOTES.txt")
eval_smoke.run(BINARY, EMULATOR, POSTGRES_URL, check)

# 9. The Dockerfile's dependency layer copies every workspace member's manifest and stubs every
#    target the manifests declare (docker cannot run here; a missing manifest or stub would
#    break `docker build` at the dependency layer), and builds and ships both emulators.
print("\n== Dockerfile")
with open(os.path.join(ROOT, "Cargo.toml")) as f:
    cargo_toml = f.read()
with open(os.path.join(ROOT, "Dockerfile")) as f:
    dockerfile = f.read()
benches = re.findall(r'\[\[bench\]\]\s*\nname\s*=\s*"([^"]+)"', cargo_toml)
missing = [b for b in benches if f"benches/{b}.rs" not in dockerfile]
check(benches and not missing, f"Dockerfile stubs every declared bench ({', '.join(benches)}): missing {missing or 'none'}")
members = sorted(
    name
    for name in os.listdir(os.path.join(ROOT, "crates"))
    if os.path.isfile(os.path.join(ROOT, "crates", name, "Cargo.toml"))
)
unstubbed = []
for name in members:
    if f"COPY crates/{name}/Cargo.toml" not in dockerfile:
        unstubbed.append(f"crates/{name}/Cargo.toml")
    with open(os.path.join(ROOT, "crates", name, "Cargo.toml")) as f:
        manifest = f.read()
    paths = re.findall(r'^path\s*=\s*"([^"]+)"', manifest, re.MULTILINE) or ["src/lib.rs"]
    unstubbed += [f"crates/{name}/{p}" for p in paths if f"crates/{name}/{p}" not in dockerfile]
check(members and not unstubbed, f"Dockerfile copies and stubs every workspace member ({', '.join(members)}): missing {unstubbed or 'none'}")
emulators = ["aws-scim-emulator", "graph-emulator"]
unshipped = [
    e for e in emulators
    if f"-p {e}" not in dockerfile or f"/src/target/release/{e} /usr/local/bin/{e}" not in dockerfile
]
check(not unshipped, f"Dockerfile builds and ships both emulators (the evaluation install runs aws-scim-emulator): missing {unshipped or 'none'}")
result = subprocess.run([os.path.join(BIN, "hadolint"), os.path.join(ROOT, "Dockerfile")], capture_output=True, text=True)
check(result.returncode == 0, "hadolint Dockerfile: " + (result.stdout + result.stderr).strip())

print(f"\n{len(failures)} failed" if failures else "\nall deployment checks passed")
sys.exit(1 if failures else 0)
