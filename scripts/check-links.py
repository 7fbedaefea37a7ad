#!/usr/bin/env python3
"""Every relative link of the README and docs/ resolves (run by `make lint`):
the file exists, and an anchor names a heading there (GitHub's rule:
lowercase, punctuation but '-' and '_' dropped, spaces to '-', '-1', '-2'
for repeated headings). Links inside code blocks are not links."""
import glob
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
LINK = re.compile(r"\[([^\[\]]*)\]\(([^)\s]+)\)")


def lines(path):
    fence = False
    for no, line in enumerate(open(path, encoding="utf-8"), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if not fence:
            yield no, line


def anchors(path):
    out, seen = set(), {}
    for _, line in lines(path):
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        s = re.sub(r"[^\w\- ]", "", m.group(2).lower()).replace(" ", "-")
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def main():
    files = [os.path.join(ROOT, f) for f in ("README.md", "SECURITY.md", "CONTRIBUTING.md", "CHANGELOG.md")]
    files += sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
    bad = 0
    for f in files:
        rel = os.path.relpath(f, ROOT)
        for no, line in lines(f):
            for m in LINK.finditer(line):
                target = m.group(2)
                if re.match(r"^[a-z]+:", target):
                    continue
                path, _, anchor = target.partition("#")
                dest = os.path.normpath(os.path.join(os.path.dirname(f), path)) if path else f
                if not os.path.exists(dest):
                    print(f"{rel}:{no}: no such file: {target}", file=sys.stderr)
                    bad += 1
                elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
                    print(f"{rel}:{no}: no such heading: {target}", file=sys.stderr)
                    bad += 1
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
