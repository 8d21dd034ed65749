"""Checks the Helm chart and the Dockerfile offline.

- `helm lint --strict` (Helm 4, embedded in helm-python-sdk) with production-like values;
- render the chart and validate every manifest against the Kubernetes 1.33 schemas
  (kubernetes-validate; the ServiceMonitor/PrometheusRule CRDs are only parsed);
- feed the rendered config.toml, with the secret files the Deployment would mount, to
  `pimbridge check-config`: the chart must produce a configuration pimbridge accepts;
- values.schema.json refuses bad values, and missing secrets fail rendering with a clear message;
- hadolint on the Dockerfile.

Usage: python scripts/check_deploy.py PATH/TO/pimbridge-binary
"""

import copy
import os
import subprocess
import sys
import tempfile

import helm_python
import yaml
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(ROOT, "charts", "pimbridge")
BINARY = sys.argv[1]

VALUES = {
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
    "prometheusRule": {"enabled": True},
    "extraVolumes": [{"name": "rds-ca", "configMap": {"name": "rds-ca-bundle"}}],
    "extraVolumeMounts": [{"name": "rds-ca", "mountPath": "/etc/pimbridge-ca", "readOnly": True}],
}

failures = []


def check(condition, message):
    print(("ok   " if condition else "FAIL ") + message)
    if not condition:
        failures.append(message)


def render(values):
    chart = helm_python.Chart.load(CHART)
    try:
        return chart.render(values, name="pimbridge", namespace="iam", is_install=True)
    finally:
        chart.close()


# 1. Lint.
report = helm_python.lint(CHART, VALUES, strict=True, namespace="iam", kube_version="v1.33.0")
problems = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
check(not problems, f"helm lint --strict: {problems or 'clean'}")

# 2. Render and validate the manifests.
manifests = render(VALUES)
documents = []
for path, text in manifests.items():
    if not path.endswith(".yaml"):
        continue
    for doc in yaml.safe_load_all(text):
        if doc:
            documents.append((path, doc))
kinds = sorted({d["kind"] for _, d in documents})
check(
    {"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget", "Job", "ServiceMonitor", "PrometheusRule"}
    <= set(kinds),
    f"rendered kinds: {kinds}",
)
with tempfile.TemporaryDirectory() as tmp:
    core = [d for _, d in documents if d["kind"] not in ("ServiceMonitor", "PrometheusRule")]
    out = os.path.join(tmp, "manifests.yaml")
    with open(out, "w") as f:
        yaml.safe_dump_all(core, f)
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "kubernetes-validate"), "-k", "1.33.0", "--strict", out],
        capture_output=True,
        text=True,
    )
    check(result.returncode == 0, "kubernetes-validate --strict (1.33): " + (result.stdout + result.stderr).strip()[-400:])

# 3. The rendered configuration loads in pimbridge, with the files the pods mount.
deployment = next(d for _, d in documents if d["kind"] == "Deployment")
container = deployment["spec"]["template"]["spec"]["containers"][0]
configmap = next(d for _, d in documents if d["kind"] == "ConfigMap" and "hook" not in str(d["metadata"].get("annotations")))
secret = next(d for _, d in documents if d["kind"] == "Secret" and "hook" not in str(d["metadata"].get("annotations")))
check(container["readinessProbe"]["httpGet"]["path"] == "/health/ready", "readiness probe on /health/ready")
check(container["livenessProbe"]["httpGet"]["path"] == "/health/live", "liveness probe on /health/live")
check(deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True, "pods run as non-root")
check(
    any(m["name"] == "rds-ca" for m in container["volumeMounts"])
    and any(v["name"] == "rds-ca" for v in deployment["spec"]["template"]["spec"]["volumes"]),
    "extra volumes (e.g. a CA bundle) are mounted",
)
with tempfile.TemporaryDirectory() as tmp:
    secrets_dir = os.path.join(tmp, "secrets")
    os.makedirs(secrets_dir)
    for key, value in secret["stringData"].items():
        with open(os.path.join(secrets_dir, key), "w") as f:
            f.write(value)
    config_path = os.path.join(tmp, "config.toml")
    with open(config_path, "w") as f:
        f.write(configmap["data"]["config.toml"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIMBRIDGE_")}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"].replace("/var/run/secrets/pimbridge", secrets_dir).replace(
                "/etc/pimbridge/config.toml", config_path
            )
    result = subprocess.run([BINARY, "check-config"], env=env, capture_output=True, text=True)
    check(result.returncode == 0, "pimbridge check-config accepts the chart's configuration: " + (result.stdout + result.stderr).strip())
    check("2 application(s)" in result.stdout, "both applications reach pimbridge")

# 4. Bad values are refused.
def refused(values, expected, label):
    try:
        render(values)
    except helm_python.HelmError as error:
        check(expected in str(error), f"{label}: refused ({str(error)[:120]}...)")
        return
    check(False, f"{label}: was accepted")


bad = copy.deepcopy(VALUES)
bad["config"]["applications"]["Prod-EU"] = bad["config"]["applications"].pop("prod")
refused(bad, "Prod-EU", "an application name env overrides cannot reach")
bad = copy.deepcopy(VALUES)
bad["config"]["database"] = {"url": "postgres://in-a-configmap"}
refused(bad, "database", "a database URL in the ConfigMap")
bad = copy.deepcopy(VALUES)
del bad["secrets"]["scimTokens"]["sandbox"]
refused(bad, "secrets.scimTokens.sandbox is required", "a missing SCIM token")
bad = copy.deepcopy(VALUES)
bad["secrets"]["databaseUrl"] = ""
refused(bad, "secrets.databaseUrl is required", "a missing database URL")
bad = copy.deepcopy(VALUES)
bad["secrets"]["graphClientState"] = ""
refused(bad, "secrets.graphClientState is required", "Graph without its clientState")
bad = copy.deepcopy(VALUES)
bad["config"]["graph"]["client_secret"] = "in-a-configmap"
refused(bad, "graph", "a Graph secret in the ConfigMap")
bad = copy.deepcopy(VALUES)
bad["secrets"]["adminToken"] = ""
refused(bad, "secrets.adminToken is required", "the admin API without its token")
bad = copy.deepcopy(VALUES)
bad["config"]["admin"] = {"token": "in-a-configmap-0123456789"}
refused(bad, "admin", "an admin token in the ConfigMap")
existing = copy.deepcopy(VALUES)
existing["secrets"] = {"existingSecret": "pimbridge-prod"}
rendered = render(existing)
check(
    not any("kind: Secret" in text for text in rendered.values()) and "pimbridge-prod" in rendered["pimbridge/templates/deployment.yaml"],
    "existingSecret: no Secret rendered, the Deployment mounts the named one",
)

# 5. The Dockerfile's dependency layer copies every workspace member's manifest and stubs every
#    target the manifests declare (docker cannot run here; a missing manifest or stub would
#    break `docker build` at the dependency layer), and builds and ships both emulators.
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
check(not unshipped, f"Dockerfile builds and ships both emulators: missing {unshipped or 'none'}")

# 6. hadolint.
result = subprocess.run(
    [os.path.join(os.path.dirname(sys.executable), "hadolint"), os.path.join(ROOT, "Dockerfile")],
    capture_output=True,
    text=True,
)
check(result.returncode == 0, "hadolint Dockerfile: " + (result.stdout + result.stderr).strip())

print(f"\n{len(failures)} failed" if failures else "\nall deployment checks passed")
sys.exit(1 if failures else 0)
