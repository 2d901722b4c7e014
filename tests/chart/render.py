"""Renders, lints and schema-checks the Helm chart offline with Helm's own Go library
(PyPI helm-python-sdk, which scripts/install-test-deps installs), for tests/chart*.rs.

    python3 tests/chart/render.py render CHART VALUES.yaml   -> JSON {"objects": [...], "notes": "..."}
    python3 tests/chart/render.py lint CHART VALUES.yaml     -> JSON lint report
    python3 tests/chart/render.py schema CHART VALUES.yaml   -> exit 1 and the error when refused

VALUES.yaml may be empty (the chart's defaults). Rendering uses the release name "mail"
in namespace "mail", as an install would.
"""

import json
import sys

import yaml
import helm_python as helm

RELEASE, NAMESPACE = "mail", "mail"


def values(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def render(chart_dir, values_path):
    chart = helm.Chart.load(chart_dir)
    given = values(values_path)
    chart.validate_schema(chart.merge_values(given))
    manifests = chart.render(given, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects, notes = [], ""
    for path in sorted(manifests):
        text = manifests[path]
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                doc["metadata"]["annotations"]["sluice.test/template"] = path
                objects.append(doc)
    crds = [yaml.safe_load(c["data"]) if isinstance(c, dict) and "data" in c else c for c in chart.crds]
    return {"objects": objects, "notes": notes, "crds": crds}


def main():
    mode, chart_dir, values_path = sys.argv[1:4]
    try:
        if mode == "render":
            print(json.dumps(render(chart_dir, values_path)))
        elif mode == "lint":
            print(json.dumps(helm.lint(chart_dir, values(values_path), strict=True, namespace=NAMESPACE)))
        elif mode == "schema":
            chart = helm.Chart.load(chart_dir)
            chart.validate_schema(chart.merge_values(values(values_path)))
            print("ok")
        else:
            sys.exit(f"unknown mode {mode}")
    except helm.HelmError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
