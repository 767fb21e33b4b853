#!/usr/bin/env python3
"""Checks the server's floors (docs/architecture.md, "The server's floors"): broker/ never
imports amqp/ or http/, http/ never imports amqp/, and no two modules import each other
in a circle, except the connection and its channels. Counts `crate::…` paths in each
file (test modules included); a module is a top-level file or a folder's first level
(`broker::queue`, `amqp::channel`). Exits 1 and names the offence if the rules break."""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "crates", "server", "src")
FLOORS = ("amqp", "broker", "http")
ALLOWED_CYCLES = [{"amqp::channel", "amqp::connection"}]


def unit_of(rel):
    parts = rel[:-3].split("/")
    if parts[-1] == "mod":
        parts = parts[:-1]
    return "::".join(parts[:2]) if parts[0] in FLOORS else parts[0]


def graph():
    edges = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            unit = unit_of(os.path.relpath(path, ROOT))
            src = re.sub(r"//.*", "", open(path).read())
            deps = edges.setdefault(unit, set())
            for m in re.finditer(r"crate::([a-z_]+)(?:::([a-z_]+))?", src):
                a, b = m.group(1), m.group(2)
                target = f"{a}::{b}" if a in FLOORS and b else a
                if target != unit and not unit.startswith(target + "::"):
                    deps.add(target)
    return edges


def cycles(edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def main():
    edges = graph()
    bad = []
    for unit, deps in sorted(edges.items()):
        for d in sorted(deps):
            if unit.startswith("broker") and d.split("::")[0] in ("amqp", "http"):
                bad.append(f"{unit} imports {d}: broker/ imports nothing above it")
            if unit.startswith("http") and d.startswith("amqp"):
                bad.append(f"{unit} imports {d}: http/ calls broker/ only")
    for c in cycles(edges):
        if c not in ALLOWED_CYCLES:
            bad.append("modules import each other in a circle: " + ", ".join(sorted(c)))
    for b in bad:
        print("layers:", b)
    if bad:
        sys.exit(1)
    print(f"layers: {len(edges)} modules, floors and circles as docs/architecture.md says")


if __name__ == "__main__":
    main()
