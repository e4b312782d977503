"""The README and docs/: tables that render, links that resolve, every configuration
field documented, every metric the dashboard queries documented."""
import glob
import json
import os
import re

from conftest import ROOT

DOCS = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def prose_lines(text):
    """(line number, line) outside fenced code blocks."""
    fence = None
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*(```+|~~~+)", line)
        if m:
            if fence is None:
                fence = m.group(1)[0] * 3
            elif line.strip().startswith(fence):
                fence = None
            continue
        if fence is None:
            yield n, line


def cells(row):
    """GFM cells of a table row: split at pipes not escaped with a backslash (a
    pipe inside a code span splits too, unless escaped)."""
    body = row.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return re.split(r"(?<!\\)\|", body)


def tables(path):
    """Each run of consecutive table lines, as [(line number, line)]."""
    runs, run = [], []
    for n, line in prose_lines(read(path)):
        if line.lstrip().startswith("|"):
            run.append((n, line))
        else:
            if run:
                runs.append(run)
            run = []
    if run:
        runs.append(run)
    return runs


def test_every_table_has_a_header_and_rows_of_its_width():
    problems = []
    for path in DOCS:
        name = os.path.relpath(path, ROOT)
        for run in tables(path):
            (n0, header), rest = run[0], run[1:]
            width = len(cells(header))
            if not rest or not re.fullmatch(r"\s*\|?(\s*:?-{3,}:?\s*\|)*\s*:?-{3,}:?\s*\|?\s*", rest[0][1]):
                # A table split by a blank line leaves a run of rows without a header.
                problems.append(f"{name}:{n0}: table rows without a header and delimiter row")
                continue
            for n, line in rest:
                if len(cells(line)) != width:
                    problems.append(f"{name}:{n}: {len(cells(line))} cells, header has {width}")
    assert not problems, "\n".join(problems)


def test_relative_links_resolve():
    missing = []
    for path in DOCS:
        base = os.path.dirname(path)
        for n, line in prose_lines(read(path)):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                    continue
                file = target.split("#", 1)[0]
                if not os.path.exists(os.path.normpath(os.path.join(base, file))):
                    missing.append(f"{os.path.relpath(path, ROOT)}:{n}: {target}")
    assert not missing, "\n".join(missing)


def config_fields():
    """Field names of the configuration structs (serde names), from src/config."""
    src = read(os.path.join(ROOT, "src", "config", "mod.rs"))
    fields = set()
    for struct in re.finditer(r"deny_unknown_fields[^\]]*\)\]\s*pub struct \w+ \{(.*?)\n\}", src, re.S):
        rename = None
        for line in struct.group(1).splitlines():
            m = re.search(r'rename = "([^"]+)"', line)
            if m:
                rename = m.group(1)
            m = re.match(r"\s*pub (\w+):", line)
            if m:
                fields.add(rename or m.group(1))
                rename = None
    return fields


def test_every_configuration_field_is_in_the_reference_tables():
    ref = os.path.join(ROOT, "docs", "configuration.md")
    documented = set()
    for run in tables(ref):
        for _, line in run:
            first = cells(line)[0]
            documented.update(re.findall(r"`([a-z_]+)`", first))
    fields = config_fields()
    assert len(fields) > 40, fields
    assert not fields - documented, sorted(fields - documented)


def readme_metrics():
    text = read(os.path.join(ROOT, "README.md"))
    section = text.split("\n## Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"\bapiguard_[a-z_]+[a-z]", section))


def test_dashboard_queries_only_documented_metrics():
    with open(os.path.join(ROOT, "envoy", "grafana-dashboard.json")) as f:
        dash = json.load(f)
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    queried = {m for e in exprs for m in re.findall(r"\bapiguard_[a-z_]+[a-z]", e)}
    documented = readme_metrics()
    assert len(queried) >= 10, queried
    assert not queried - documented, sorted(queried - documented)
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
