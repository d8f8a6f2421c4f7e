"""MkDocs hook: links that leave the documentation go to the repository.

README sections are included into the guides (one source of truth); their links to
repository files (``SECURITY.md``, ``examples/fastapi_app/``) become, once
included, paths above ``docs/``, which no page of the site holds. They are pointed
at the repository (``repo_url`` in mkdocs.yml) instead, so ``mkdocs build --strict``
still fails on any other broken link.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parent.parent
# A Markdown link whose target climbs out of docs/: ](../SECURITY.md), ](../../examples/x/)
OUTSIDE = re.compile(r"\]\(((?:\.\./)+)([^)\s#]+)(#[^)\s]*)?\)")


@event_priority(-100)  # after include-markdown has put the README sections in
def on_page_markdown(markdown: str, page: Any, config: Any, **kwargs: Any) -> str:
    repository = str(config["repo_url"]).rstrip("/")
    depth = page.file.src_uri.count("/") + 1  # how many ../ reach the repository root

    def repository_link(match: re.Match[str]) -> str:
        ups, target, anchor = len(match.group(1)) // 3, match.group(2), match.group(3) or ""
        if ups != depth or not (ROOT / target).exists():
            return match.group(0)  # left for mkdocs to report
        kind = "tree" if (ROOT / target).is_dir() else "blob"
        return f"]({repository}/{kind}/main/{target.rstrip('/')}{anchor})"

    return OUTSIDE.sub(repository_link, markdown)
