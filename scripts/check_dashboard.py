"""Checks the Grafana dashboard's queries against what pimbridge exports.

- every panel expression parses: each becomes a recording rule in a rules file that
  `promtool check rules` must accept (Grafana's variables replaced by sample values);
- every metric name an expression (or a template variable's `label_values(...)`) uses is in
  docs/metrics.txt, and every label it names exists on the metrics it is used with: matchers
  `{label=...}` on their own metric, `by (...)`/`without (...)`/`on (...)`/`ignoring (...)`/
  `group_left (...)` on at least one metric of the expression.

docs/metrics.txt is itself compared with a live /metrics by tests/api/metrics_catalogue.rs.

Usage: python scripts/check_dashboard.py [DASHBOARD.json]   (exit 1 on any problem)
As a module: problems(dashboard_path, catalogue_path, promtool) -> (list of problems, summary).
"""

import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASHBOARD = os.path.join(ROOT, "charts", "pimbridge", "dashboards", "pimbridge.json")
CATALOGUE = os.path.join(ROOT, "docs", "metrics.txt")

# Labels Prometheus attaches to every scraped series (target labels).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}
# Series Prometheus makes itself for every target.
SYNTHETIC = {"up": set(), "scrape_duration_seconds": set(), "scrape_samples_scraped": set()}
# Grafana's variables, replaced by values PromQL accepts.
GRAFANA_VARIABLES = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "job": "pimbridge",
    "application": "demo",
}
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "atan2", "inf", "nan",
}
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile",
}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def load_catalogue(path=CATALOGUE):
    """Series name -> label set (histograms expanded into _bucket/_sum/_count)."""
    series = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}\s+(counter|gauge|histogram|summary)(\s+pending)?$", line)
            if not match:
                raise ValueError(f"{path}: cannot read line {line!r}")
            name, labels, kind = match.group(1), match.group(2), match.group(3)
            labels = {l.strip() for l in labels.split(",") if l.strip()}
            if kind == "histogram":
                series[name + "_bucket"] = labels | {"le"}
                series[name + "_sum"] = set(labels)
                series[name + "_count"] = set(labels)
            else:
                series[name] = labels
    series.update(SYNTHETIC)
    return series


def substitute(expr):
    """Replaces Grafana's $var / ${var} / ${var:format} by sample values."""
    def value(match):
        name = match.group(1) or match.group(2)
        if name not in GRAFANA_VARIABLES:
            raise ValueError(f"unknown Grafana variable ${name}")
        return GRAFANA_VARIABLES[name]
    return re.sub(r"\$\{([a-zA-Z_]+)(?::[a-z]+)?\}|\$([a-zA-Z_]+)", value, expr)


def tokens(expr):
    """PromQL tokens: (kind, text) with kind in name, string, number, duration, punct."""
    i = 0
    out = []
    while i < len(expr):
        c = expr[i]
        if c.isspace():
            i += 1
        elif c in "\"'`":
            j = i + 1
            while j < len(expr) and expr[j] != c:
                j += 2 if expr[j] == "\\" else 1
            out.append(("string", expr[i + 1:j]))
            i = j + 1
        elif c == "[":
            j = expr.index("]", i)
            out.append(("duration", expr[i:j + 1]))
            i = j + 1
        elif c.isdigit() or (c == "." and i + 1 < len(expr) and expr[i + 1].isdigit()):
            match = re.match(r"[0-9.]+(e[+-]?[0-9]+)?([smhdwy]|ms)?", expr[i:])
            out.append(("number", match.group(0)))
            i += len(match.group(0))
        else:
            match = NAME.match(expr, i)
            if match:
                out.append(("name", match.group(0)))
                i = match.end()
            else:
                two = expr[i:i + 2]
                if two in ("=~", "!~", "!=", "==", ">=", "<="):
                    out.append(("punct", two))
                    i += 2
                else:
                    out.append(("punct", c))
                    i += 1
    return out


def uses(expr):
    """(metrics, matcher labels per metric, grouping labels) an expression names."""
    toks = tokens(expr)
    metrics = []
    matchers = []  # (metric or None, label)
    grouping = set()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else (None, None)
        if kind == "name" and text in LABEL_LIST_KEYWORDS and nxt == ("punct", "("):
            j = i + 2
            while toks[j] != ("punct", ")"):
                if toks[j][0] == "name":
                    grouping.add(toks[j][1])
                j += 1
            i = j + 1
            continue
        if kind == "name" and nxt == ("punct", "("):
            i += 1  # a function or an aggregation
            continue
        if kind == "name" and (text.lower() in KEYWORDS or text in AGGREGATIONS):
            i += 1
            continue
        metric = None
        if kind == "name":
            metric = text
            metrics.append(metric)
            i += 1
        if i < len(toks) and toks[i] == ("punct", "{"):
            j = i + 1
            while toks[j] != ("punct", "}"):
                if toks[j][0] == "name" and toks[j + 1][0] == "punct" and toks[j + 1][1] in ("=", "!=", "=~", "!~"):
                    if toks[j][1] == "__name__":
                        metrics.append(toks[j + 2][1])
                    else:
                        matchers.append((metric, toks[j][1]))
                j += 1
            i = j + 1
            continue
        if metric is None:
            i += 1
    return metrics, matchers, grouping


def check_expression(where, expr, catalogue):
    problems = []
    metrics, matchers, grouping = uses(expr)
    for metric in metrics:
        if metric not in catalogue:
            problems.append(f"{where}: metric {metric} is not exported (docs/metrics.txt)")
    known = [catalogue[m] | TARGET_LABELS for m in metrics if m in catalogue]
    for metric, label in matchers:
        if metric in catalogue and label not in catalogue[metric] | TARGET_LABELS:
            problems.append(f"{where}: {metric} has no label {label}")
    for label in grouping:
        if known and not any(label in labels for labels in known):
            problems.append(f"{where}: no metric of the expression has the label {label}")
    return problems, metrics


def expressions(dashboard):
    """(where, expr) of every panel target, and (where, selector, label) of label_values()."""
    exprs = []
    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    exprs.append((f"panel {panel.get('title')!r} query {target.get('refId')}", target["expr"]))
            walk(panel.get("panels", []))
    walk(dashboard.get("panels", []))
    variables = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = re.fullmatch(r"label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)", query.strip())
        if not match:
            raise ValueError(f"variable {var['name']}: only label_values(selector, label) is checked, got {query!r}")
        variables.append((f"variable ${var['name']}", match.group(1), match.group(2)))
    return exprs, variables


def problems(dashboard_path=DASHBOARD, catalogue_path=CATALOGUE, promtool="promtool"):
    with open(dashboard_path) as f:
        dashboard = json.load(f)
    catalogue = load_catalogue(catalogue_path)
    exprs, variables = expressions(dashboard)
    found = []
    used = set()
    rules = []
    for n, (where, expr) in enumerate(exprs):
        try:
            concrete = substitute(expr)
        except ValueError as error:
            found.append(f"{where}: {error}")
            continue
        rules.append({"record": f"dashboard:query_{n}", "expr": concrete})
        issues, metrics = check_expression(where, concrete, catalogue)
        found += issues
        used |= set(metrics)
    for where, selector, label in variables:
        concrete = substitute(selector)
        rules.append({"record": f"dashboard:variable_{len(rules)}", "expr": concrete})
        issues, metrics = check_expression(where, concrete, catalogue)
        found += issues
        used |= set(metrics)
        if not any(label in catalogue.get(m, set()) | TARGET_LABELS for m in metrics):
            found.append(f"{where}: {selector} has no label {label}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dashboard-queries.rules.yaml")
        with open(path, "w") as f:
            json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, indent=1)
        result = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        if result.returncode != 0:
            found.append("promtool check rules on the dashboard's queries: " + (result.stdout + result.stderr).strip())
    summary = f"{len(exprs)} panel queries and {len(variables)} variables, {len(used)} metrics"
    return found, summary


if __name__ == "__main__":
    issues, summary = problems(sys.argv[1] if len(sys.argv) > 1 else DASHBOARD)
    for issue in issues:
        print("FAIL " + issue)
    print(("ok   " if not issues else "FAIL ") + "dashboard: " + summary)
    sys.exit(1 if issues else 0)
