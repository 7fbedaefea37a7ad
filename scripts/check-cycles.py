#!/usr/bin/env python3
"""No import circles between the modules of a crate (run by `make lint`).

A module is a file under the crate's source root (`a/b.rs` and `a/b/mod.rs`
are module `a::b`); a submodule counts as its top-level parent when its
parent is a directory module that re-exports it (`service::ip_analysis` is
part of `service`). An edge is any `crate::x` (or `super::x` from a
top-level module) its file names. A cycle is reported with its path.
"""
import os
import re
import sys

CRATES = {
    "iclear-engine": "src/engine",
    "iclear": "src",
    "iclear-services": "src/services",
}
SKIP_DIRS = {"engine", "services", "tests", "proptest-regressions"}


def modules(root, top):
    found = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if top and rel != "." and rel.split(os.sep)[0] in SKIP_DIRS:
            dirs[:] = []
            continue
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            parts = [] if rel == "." else rel.split(os.sep)
            name = f[:-3]
            if name not in ("mod", "lib", "main"):
                parts = parts + [name]
            if not parts:
                continue
            found[path] = parts
    return found


def unit(parts):
    return parts[0]


def edges(path, parts, names):
    text = open(path, encoding="utf-8").read()
    # test modules may reach anywhere
    text = re.split(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)[0]
    out = set()
    for m in re.finditer(r"\bcrate::([a-z_][a-z0-9_]*)", text):
        out.add(m.group(1))
    if len(parts) >= 2:
        for m in re.finditer(r"\bsuper::([a-z_][a-z0-9_]*)", text):
            if len(parts) == 2:
                out.add(m.group(1))
    me = unit(parts)
    return {o for o in out if o in names and o != me}


def cycle(graph):
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


def main():
    bad = False
    for crate, root in CRATES.items():
        mods = modules(root, top=(crate == "iclear"))
        names = {unit(p) for p in mods.values()}
        graph = {}
        for path, parts in mods.items():
            if parts[-1].endswith("_tests") or parts[-1] in ("tests", "proptests"):
                continue
            graph.setdefault(unit(parts), set()).update(edges(path, parts, names))
        # the store's files form their own stack below the glue
        c = cycle(graph)
        if c:
            print(f"{crate}: import circle: {' -> '.join(c)}", file=sys.stderr)
            bad = True
        if crate == "iclear":
            smods = {p: parts[1:] for p, parts in mods.items() if parts[0] == "store" and len(parts) > 1}
            snames = {q[0] for q in smods.values()}
            sgraph = {}
            for path, parts in smods.items():
                text = open(path, encoding="utf-8").read()
                text = re.split(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)[0]
                deps = set(re.findall(r"\bsuper::([a-z_][a-z0-9_]*)", text))
                deps |= set(re.findall(r"\bcrate::store::([a-z_][a-z0-9_]*)", text))
                sgraph.setdefault(parts[0], set()).update(d for d in deps if d in snames and d != parts[0])
            c = cycle(sgraph)
            if c:
                print(f"{crate}: import circle in store: {' -> '.join(c)}", file=sys.stderr)
                bad = True
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
