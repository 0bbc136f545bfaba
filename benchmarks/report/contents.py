"""The "Contents" list at the top of docs/RESULTS.md: a link to every
second-level heading, with the anchor GitHub gives it."""
from __future__ import annotations


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation other
    than '-' and '_' dropped, spaces turned into '-'."""
    text = heading.lstrip("#").strip().lower()
    return "".join(c for c in text if c.isalnum() or c in "-_ ").replace(" ", "-")


def contents(lines: list) -> list:
    """Markdown lines of a linked list of the ``## `` headings in ``lines``
    (entries may hold several lines each)."""
    heads = [x.strip() for entry in lines for x in entry.split("\n") if x.startswith("## ")]
    if not heads:
        return []
    return ["Contents:\n"] + [f"- [{h[3:]}](#{anchor(h)})" for h in heads] + [""]
