#!/usr/bin/env python3
"""Validates rendered Kubernetes manifests strictly (no unknown fields): built-in kinds with
kubernetes-validate, custom resources against the schemas derived from their official CRDs
(deploy/k8s/schemas/, made by crd_schemas.py). A kind with neither is an error, not a skip.

    python3 scripts/k8s/validate.py [--kubernetes-version 1.32] FILE...

What a real API server checks beyond this: CEL rules (`x-kubernetes-validations`) of the CRDs and
admission webhooks; formats such as `int-or-string` are checked by type only.
"""
import argparse
import glob
import json
import os
import sys

import jsonschema
import kubernetes_validate
import yaml

SCHEMAS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy", "k8s", "schemas")

# What the API server keeps of a custom resource's metadata in manifests; anything else is a typo.
METADATA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def strict(node):
    """OpenAPI v3 (structural CRD schema) -> JSON Schema that refuses unknown fields."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "$defs"):
            out[key] = {name: strict(sub) for name, sub in value.items()}
        elif key in ("x-kubernetes-validations",):
            continue
        else:
            out[key] = strict(value)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (out.get("type") == "object" and "properties" in out and "additionalProperties" not in out
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def load_crd_schemas():
    schemas = {}
    for path in sorted(glob.glob(os.path.join(SCHEMAS, "*.json"))):
        with open(path) as f:
            doc = json.load(f)
        schema = strict(doc["schema"])
        schema.setdefault("properties", {})["metadata"] = METADATA
        schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
        schema["additionalProperties"] = False
        schemas[(doc["apiVersion"], doc["kind"])] = (schema, doc["source"])
    return schemas


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", default="1.32")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    crds = load_crd_schemas()
    errors = 0
    count = 0
    for filename in args.files:
        with open(filename) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            count += 1
            name = f"{filename}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key in crds:
                schema, source = crds[key]
                validator = jsonschema.Draft202012Validator(schema)
                found = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
                for err in found:
                    where = ".".join(str(p) for p in err.absolute_path) or "(top)"
                    print(f"INVALID {name}: {where}: {err.message}")
                errors += len(found)
                if not found:
                    print(f"ok      {name} (CRD schema from {source['repository']}@{source['tag']})")
                continue
            try:
                kubernetes_validate.validate(doc, args.kubernetes_version, strict=True)
                print(f"ok      {name} (Kubernetes {args.kubernetes_version}, strict)")
            except kubernetes_validate.SchemaNotFoundError as err:
                print(f"INVALID {name}: no schema: {err.message}")
                errors += 1
            except kubernetes_validate.ValidationError as err:
                where = ".".join(str(p) for p in err.path) or "(top)"
                print(f"INVALID {name}: {where}: {err.message}")
                errors += 1
    if count == 0:
        sys.exit("no manifests to validate")
    print(f"{count} objects, {errors} errors")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
