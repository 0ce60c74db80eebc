#!/usr/bin/env python3
"""Derives the JSON schemas that scripts/k8s/validate.py checks custom resources against, from the
official CRD YAML of each project at a pinned release, and writes them to deploy/k8s/schemas/.

kubernetes-validate knows only the built-in kinds; the manifests also hold a PodMonitor
(prometheus-operator), a ScaledObject (KEDA), an InferencePool (Gateway API Inference Extension) and an
HTTPRoute (Gateway API). Each output file keeps the CRD's `openAPIV3Schema` for the served version as
published (descriptions removed, to keep the files small) and names its source: repository, tag, path
and the sha256 of the upstream file.

Run by a developer who has the upstream repositories checked out (CI has no GitHub access and uses the
committed files):
    python3 scripts/k8s/crd_schemas.py --repos DIR   # DIR/<owner>+<name>/repo is a git clone of each
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

import yaml

# (repository, tag, path of the CRD YAML, the version the manifests use)
SOURCES = [
    ("kubernetes-sigs/gateway-api-inference-extension", "v1.6.0",
     "config/crd/bases/inference.networking.k8s.io_inferencepools.yaml", "v1"),
    ("kubernetes-sigs/gateway-api", "v1.6.1",
     "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml", "v1"),
    ("kedacore/keda", "v2.20.2", "config/crd/bases/keda.sh_scaledobjects.yaml", "v1alpha1"),
    ("prometheus-operator/prometheus-operator", "v0.93.0",
     "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml", "v1"),
]

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy", "k8s", "schemas")


def strip_descriptions(node):
    """Removes `description` keywords (not properties that happen to be called `description`)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                continue
            if key == "properties" and isinstance(value, dict):
                out[key] = {name: strip_descriptions(sub) for name, sub in value.items()}
            else:
                out[key] = strip_descriptions(value)
        return out
    if isinstance(node, list):
        return [strip_descriptions(item) for item in node]
    return node


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", required=True, help="folder holding <owner>+<name>/repo git clones")
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    for repo, tag, path, version in SOURCES:
        git_dir = os.path.join(args.repos, repo.replace("/", "+"), "repo")
        text = subprocess.run(["git", "-C", git_dir, "show", f"{tag}:{path}"], check=True,
                              capture_output=True).stdout
        crd = yaml.safe_load(text)
        spec = crd["spec"]
        served = [v for v in spec["versions"] if v["name"] == version and v.get("served")]
        if not served:
            sys.exit(f"{repo}@{tag} {path}: no served version {version}")
        schema = strip_descriptions(served[0]["schema"]["openAPIV3Schema"])
        doc = {
            "source": {"repository": f"https://github.com/{repo}", "tag": tag, "path": path,
                       "sha256": hashlib.sha256(text).hexdigest()},
            "apiVersion": f"{spec['group']}/{version}",
            "kind": spec["names"]["kind"],
            "schema": schema,
        }
        name = f"{spec['names']['kind'].lower()}-{spec['group']}-{version}.json"
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"{name}: {os.path.getsize(os.path.join(OUT, name))} bytes from {repo}@{tag}")


if __name__ == "__main__":
    main()
