"""The evaluation install works, as far as it can be run without a cluster: the chart rendered with
no values is started on this machine — its Postgres user and database as the postgres image
creates them, the emulator with the Deployment's arguments and environment, pimbridge with the
ConfigMap, the Secret's files and the Deployment's environment — with only the Services' host
names and ports replaced by local ones. Then the commands of NOTES.txt are run as printed (with
`kubectl exec`/`kubectl get secret` replaced by their local equivalents): both ways of signing
the sample event must be accepted, the membership must appear in the emulator, and the live scrape
that follows must pass `promtool check metrics`.

Called by scripts/check_deploy.py: run(pimbridge, emulator, postgres_url, check),
where postgres_url names a server on which its user may create roles and databases.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import helm_python
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(ROOT, "charts", "pimbridge")
SECRETS_DIR = "/var/run/secrets/pimbridge"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except Exception as error:  # noqa: BLE001 - not up yet
        return None, str(error)


def wait_for(url, process, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            return False
        if get(url)[0] == 200:
            return True
        time.sleep(0.2)
    return False


def env_of(container, base, secrets):
    """A container's environment: values, $(VAR) expansion, secretKeyRef from the rendered Secrets."""
    env = dict(base)
    for item in container.get("env", []):
        if "valueFrom" in item:
            ref = item["valueFrom"].get("secretKeyRef")
            if ref:
                env[item["name"]] = secrets[ref["name"]][ref["key"]]
        else:
            env[item["name"]] = re.sub(r"\$\(([A-Za-z0-9_]+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"])
    return env


def run(pimbridge, emulator, postgres_url, check):
    """Starts the rendered evaluation install locally and runs NOTES.txt; reports through check()."""
    server = urllib.parse.urlsplit(postgres_url)
    chart = helm_python.Chart.load(CHART)
    try:
        manifests = chart.render({}, name="pimbridge", namespace="iam", is_install=True)
    finally:
        chart.close()
    docs = [d for path, text in manifests.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    notes = manifests["pimbridge/templates/NOTES.txt"]
    secrets = {d["metadata"]["name"]: d["stringData"] for d in docs if d["kind"] == "Secret"}
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    postgres = next(d for d in docs if d["kind"] == "StatefulSet")
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "pimbridge")["data"]["config.toml"]

    pg_env = env_of(postgres["spec"]["template"]["spec"]["containers"][0], {}, secrets)
    user, database = pg_env["POSTGRES_USER"], pg_env["POSTGRES_DB"]
    local_db = f"{database}_eval_smoke"
    psql = [os.path.join(os.environ.get("PG_BIN", "/usr/bin"), "psql"), postgres_url, "-v", "ON_ERROR_STOP=1", "-qc"]
    quiet = dict(os.environ, PGOPTIONS="--client-min-messages=warning")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PIMBRIDGE_", "EMULATOR_"))}
    processes = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            # Postgres: what the official image does with POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB.
            subprocess.run(psql + [f"DROP DATABASE IF EXISTS {local_db}"], check=True, env=quiet)
            subprocess.run(psql + [f"DO $$ BEGIN CREATE ROLE {user} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"], check=True)
            subprocess.run(psql + [f"ALTER ROLE {user} PASSWORD '{pg_env['POSTGRES_PASSWORD']}'"], check=True)
            subprocess.run(psql + [f"CREATE DATABASE {local_db} OWNER {user}"], check=True)

            # The emulator, as its Deployment runs it.
            emulator_port = free_port()
            container = deployments["pimbridge-scim-emulator"]["spec"]["template"]["spec"]["containers"][0]
            args = [a.replace("0.0.0.0:9080", f"127.0.0.1:{emulator_port}") for a in container["args"]]
            emulator_process = subprocess.Popen([emulator, *args], env=env_of(container, base_env, secrets),
                                        stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "emulator.log"), "w"))
            processes.append(emulator_process)
            check(wait_for(f"http://127.0.0.1:{emulator_port}/_emulator/health", emulator_process),
                  f"the emulator starts with its Deployment's arguments and environment (port {emulator_port})")

            # pimbridge, as its Deployment runs it.
            http_port, internal_port = free_port(), free_port()
            container = deployments["pimbridge"]["spec"]["template"]["spec"]["containers"][0]
            local_config = (config
                            .replace("pimbridge-scim-emulator:9080", f"127.0.0.1:{emulator_port}")
                            .replace('"0.0.0.0:8080"', f'"127.0.0.1:{http_port}"')
                            .replace('"0.0.0.0:9090"', f'"127.0.0.1:{internal_port}"'))
            config_path = os.path.join(tmp, "config.toml")
            with open(config_path, "w") as f:
                f.write(local_config)
            secrets_dir = os.path.join(tmp, "secrets")
            os.makedirs(secrets_dir)
            for key, value in secrets["pimbridge"].items():
                with open(os.path.join(secrets_dir, key), "w") as f:
                    f.write(value)
            env = env_of(container, base_env, secrets)
            for name, value in list(env.items()):
                env[name] = (value.replace("/etc/pimbridge/config.toml", config_path).replace(SECRETS_DIR, secrets_dir)
                             .replace("@pimbridge-postgres:5432/" + database, f"@{server.hostname}:{server.port}/{local_db}"))
            pimbridge_process = subprocess.Popen([pimbridge, "serve"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=open(os.path.join(tmp, "pimbridge.log"), "w"))
            processes.append(pimbridge_process)
            ready = wait_for(f"http://127.0.0.1:{http_port}/health/ready", pimbridge_process)
            if not ready:
                print(open(os.path.join(tmp, "pimbridge.log")).read()[-2000:])
            check(ready, f"pimbridge becomes ready with the ConfigMap, the Secret's files and the Deployment's environment (port {http_port})")

            # NOTES.txt, as printed: the body, `pimbridge sign` in the pod, curl; then openssl.
            sign_in_pod = "kubectl -n iam exec -i deployment/pimbridge -- pimbridge sign"
            get_secret = "kubectl -n iam get secret pimbridge -o jsonpath='{.data.hmac-secret}' | base64 -d"
            lines = [line.strip() for line in notes.splitlines()]
            body = next(l for l in lines if l.startswith("BODY="))
            sign = next(l for l in lines if l.startswith("SIG=$(") and sign_in_pod in l)
            curl = next(l for l in lines if l.startswith("curl -sS http://127.0.0.1:8080/v1/events"))
            secret = next(l for l in lines if l.startswith("SECRET=$(") and get_secret in l)
            openssl = next(l for l in lines if l.startswith("TS=$(date +%s); SIG="))
            members = next(l for l in lines if l.startswith("curl -sS http://127.0.0.1:9080/_emulator/groups/by-name/"))
            local = lambda line: (line.replace(sign_in_pod, f"{pimbridge} sign")  # noqa: E731
                                  .replace(get_secret, "cat " + os.path.join(secrets_dir, "hmac-secret"))
                                  .replace("127.0.0.1:8080", f"127.0.0.1:{http_port}")
                                  .replace("127.0.0.1:9080", f"127.0.0.1:{emulator_port}"))
            script = "\n".join(["set -euo pipefail", local(body), local(sign), local(curl), "echo",
                                local(body.replace("sample-", "sample-openssl-")), local(secret), local(openssl), local(curl)])
            result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
            answers = result.stdout.strip().splitlines()
            check(result.returncode == 0 and len(answers) == 2 and all('"accepted":1' in a for a in answers),
                  f"NOTES.txt's sample event is accepted, signed by `pimbridge sign` and by openssl: {answers} {result.stderr.strip()[-300:]}")
            deadline = time.time() + 10
            seen = ""
            while time.time() < deadline:
                seen = subprocess.run(["bash", "-c", local(members)], capture_output=True, text=True).stdout
                if "alice@contoso.com" in seen:
                    break
                time.sleep(0.1)
            check("alice@contoso.com" in seen, f"NOTES.txt's last command shows the membership in the emulator: {seen.strip()[:200]}")

            # The live scrape after that traffic, from the internal listener, as Prometheus reads it.
            # The latency is observed once the job's outcome is committed, just after AWS holds it.
            deadline = time.time() + 10
            while True:
                scrape = urllib.request.urlopen(f"http://127.0.0.1:{internal_port}/metrics", timeout=10).read()
                if b"pimbridge_provisioning_latency_seconds_bucket" in scrape or time.time() > deadline:
                    break
                time.sleep(0.1)
            promtool = shutil.which("promtool")
            lint = subprocess.run([promtool or "promtool", "check", "metrics"], input=scrape, capture_output=True)
            families = sum(1 for line in scrape.decode().splitlines() if line.startswith("# TYPE pimbridge_"))
            check(promtool is not None and lint.returncode == 0 and b"pimbridge_provisioning_latency_seconds_bucket" in scrape,
                  f"promtool check metrics on a live scrape after the sample events ({families} pimbridge families): "
                  + (lint.stdout + lint.stderr).decode().strip().replace("\n", " ")[:400])
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
            subprocess.run(psql + [f"DROP DATABASE IF EXISTS {local_db}"], check=False, env=quiet)

