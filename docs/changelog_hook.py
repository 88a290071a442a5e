"""MkDocs hook: the repository's CHANGELOG.md is the site's changelog page.

The README and the pages of docs/ link the changelog as ``../CHANGELOG.md``, the file at the
repository root, which is right on GitHub and in a checkout; the changelog links the pages
as ``docs/<page>.md``. The site publishes the changelog as ``changelog.md`` (its nav entry)
beside the pages, and this hook points those links there, so that ``mkdocs build
--strict`` resolves them.
"""
from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

CHANGELOG = Path(__file__).resolve().parents[1] / "CHANGELOG.md"
PAGE = "changelog.md"


def on_files(files, config):
    files.append(File.generated(config, PAGE, abs_src_path=str(CHANGELOG)))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == PAGE:
        return markdown.replace("](docs/", "](")
    depth = page.file.src_uri.count("/")
    return markdown.replace("](" + "../" * (depth + 1) + "CHANGELOG.md", "](" + "../" * depth + PAGE)
