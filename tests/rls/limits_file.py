"""Reads a limits file in the shape of Limitador's (tests/rls/server.py describes
it): a YAML or JSON list of limits."""
import json
import re

CONDITION = re.compile(r"^\s*([\w.\[\]'\"]+)\s*(==|!=)\s*'([^']*)'\s*$")
ENTRY = re.compile(r"^(?:descriptors\[0\]\.)?(?:descriptors\[0\]\[['\"])?([\w-]+)(?:['\"]\])?$")


def entry_name(text):
    m = ENTRY.match(text.strip())
    if not m:
        raise ValueError(f"unsupported descriptor reference {text!r}")
    return m.group(1)


def load_limits(path):
    with open(path) as f:
        text = f.read()
    try:
        doc = json.loads(text)
    except ValueError:
        import yaml
        doc = yaml.safe_load(text)
    out = []
    for i, lim in enumerate(doc or []):
        conditions = []
        for c in lim.get("conditions", []):
            m = CONDITION.match(c)
            if not m:
                raise ValueError(f"limits[{i}].conditions: unsupported {c!r}")
            conditions.append((entry_name(m.group(1)), m.group(2), m.group(3)))
        out.append({
            "id": lim.get("name") or f"limit{i}",
            "namespace": lim["namespace"],
            "max_value": int(lim["max_value"]),
            "seconds": int(lim["seconds"]),
            "conditions": conditions,
            "variables": [entry_name(v) for v in lim.get("variables", [])],
        })
    return out
