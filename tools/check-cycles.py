#!/usr/bin/env python3
"""Fails when files of a crate import each other in a circle.

Reads the `use crate::…`, `use super::…` and inline `crate::…` paths of every .rs file under
`<crate>/src`, resolves each to the file that defines the module it names, and looks for cycles in
that file graph. A module's own test files (`x/tests.rs`, `#[cfg(test)]` blocks) are left out, and
so are edges from a module to its own descendants (a directory's `mod.rs` declaring and re-exporting
its children is its face, not an import). Usage: tools/check-cycles.py [crate_dir ...]
(default: collector).
"""
import os
import re
import sys

USE = re.compile(r"\b(?:crate|super)(?:::\w+)+")
BLOCK_USE = re.compile(r"use\s+(crate|super(?:::super)*)::\{([^;]*)\};", re.S)


def module_files(src):
    """Maps a module path (tuple) to its file, for every .rs file under src."""
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if rel in (["lib"], ["main"]):
                mod = ()
            elif rel[-1] == "mod":
                mod = tuple(rel[:-1])
            else:
                mod = tuple(rel)
            if rel[-1] == "tests" or rel[0] in ("bin",):
                continue
            mods.setdefault(mod, path)
    return mods


def strip_tests(text):
    """Drops `#[cfg(test)]` items (a `mod tests { … }` block or one `mod x;` line)."""
    out, i = [], 0
    while True:
        j = text.find("#[cfg(test)]", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        k = j + len("#[cfg(test)]")
        semi, brace = text.find(";", k), text.find("{", k)
        if brace < 0 or (0 <= semi < brace):
            i = semi + 1
            continue
        depth, p = 0, brace
        while p < len(text):
            if text[p] == "{":
                depth += 1
            elif text[p] == "}":
                depth -= 1
                if depth == 0:
                    break
            p += 1
        i = p + 1


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def paths_in(text):
    """Every `crate::a::b` / `super::a` path, with `use x::{a::b, c}` groups expanded."""
    found = []
    for m in BLOCK_USE.finditer(text):
        head = m.group(1)
        for part in re.split(r"[,{}]", m.group(2)):
            part = part.strip().split(" as ")[0].strip()
            if part and re.match(r"^[\w:]+$", part):
                found.append(head + "::" + part)
    text = BLOCK_USE.sub("", text)
    found += [m.group(0) for m in USE.finditer(text)]
    return found


def resolve(path, here, mods):
    """The module a path points at: the longest prefix that is a module file."""
    parts = path.split("::")
    if parts[0] == "crate":
        base, rest = (), parts[1:]
    else:
        base = list(here)
        rest = parts
        while rest and rest[0] == "super":
            base = base[:-1]
            rest = rest[1:]
        base = tuple(base)
    best = None
    for n in range(len(rest) + 1):
        cand = base + tuple(rest[:n])
        if cand in mods:
            best = cand
    return best


def graph(src):
    mods = module_files(src)
    edges = {m: set() for m in mods}
    for mod, path in mods.items():
        with open(path, encoding="utf-8") as f:
            text = strip_tests(strip_comments(f.read()))
        # `super` in `x.rs` or `x/mod.rs` is the parent of module x.
        for p in paths_in(text):
            target = resolve(p, mod, mods)
            if target is None or target == mod:
                continue
            if target[: len(mod)] == mod:  # a module's own descendant
                continue
            edges[mod].add(target)
    return mods, edges


def cycles(edges):
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    crates = sys.argv[1:] or ["collector"]
    bad = False
    for c in crates:
        src = os.path.join(root, c, "src")
        mods, edges = graph(src)
        for comp in cycles(edges):
            bad = True
            names = sorted(os.path.relpath(mods[m], root) for m in comp)
            print(f"import cycle in {c}: " + " <-> ".join(names))
            for m in sorted(comp):
                for t in sorted(edges[m]):
                    if t in comp:
                        print(f"    {os.path.relpath(mods[m], root)} -> {os.path.relpath(mods[t], root)}")
    if bad:
        sys.exit(1)
    print("no import cycles in " + ", ".join(crates))


if __name__ == "__main__":
    main()
