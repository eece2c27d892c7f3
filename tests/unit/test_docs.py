"""The project documents itself: no tracked file points outside the repository, and every
relative link of the README and docs/ leads to a file that exists.

Run: .venv/bin/python -m pytest -q tests/unit/test_docs.py
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the design folder beside the repository and its pages, which a clone does not have; spelled
# in parts so that this file itself names no path outside the repository
DESIGN = "/".join(("shared", "design"))
OUTSIDE = ("/".join(("..", "shared")), DESIGN, *(f"{n}.md" for n in ("METHOD", "NOTES", "STYLE")))
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / f for f in out.splitlines() if (ROOT / f).is_file()]


def test_no_file_refers_outside_the_repository():
    hits = []
    for f in tracked():
        if f.suffix in (".png", ".safetensors", ".parquet", ".bin", ".jpg"):
            continue
        try:
            text = f.read_text()
        except UnicodeDecodeError:
            continue
        hits += [f"{f.relative_to(ROOT)}:{n}: {line.strip()[:80]}" for n, line in enumerate(text.splitlines(), 1)
                 if any(o in line for o in OUTSIDE)]
    assert not hits, "\n".join(hits)


def test_every_relative_link_in_the_docs_exists():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, "\n".join(broken)
