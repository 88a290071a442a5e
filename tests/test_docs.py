"""The documentation: the MkDocs site builds under ``--strict``, relative links resolve,
and no file of the repository points outside it.

``mkdocs build --strict`` checks the links between pages, their anchors and the API
reference's cross-references; the link test here covers what MkDocs does not see: the
README and links from docs/ to other files of the repository.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The text files a reader or a tool might follow a reference from.
TEXT_SUFFIXES = {".py", ".md", ".cpp", ".h", ".cu", ".cuh", ".toml", ".yml", ".yaml"}
TEXT_NAMES = {"Makefile"}

# References to material that is not part of the repository: a sibling folder of the
# checkout, planning documents by their exact upper-case file names (docs/api.md is a page
# of this repository and does not match), and numbered tracker entries.
FORBIDDEN = {
    "a path into a folder outside the repository": re.compile(r"\.\./shared\b"),
    "a planning document outside the repository": re.compile(r"(?<![\w.-])(?:SPEC|DESIGN|API)\.md(?![\w-])"),
    "a numbered tracker entry": re.compile(r"\bissues?\s*(?:#\s*)?\d+\b", re.IGNORECASE),
}

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
# Inline links and images, [text](target "title"); reference definitions, [id]: target.
INLINE_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _link_targets(text: str) -> list[str]:
    """Every link target of a markdown text outside code blocks and code spans."""
    prose = CODE_SPAN.sub("", FENCE.sub("", text))
    return INLINE_LINK.findall(prose) + REFERENCE_DEF.findall(prose)


def _repository_text_files() -> list[Path]:
    """Tracked files and new files git does not ignore, of the kinds in TEXT_SUFFIXES."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: cannot list the repository's files")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    paths = [ROOT / name for name in listed.stdout.split("\0") if name]
    return [p for p in paths if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.name in TEXT_NAMES)]


def test_link_extraction_sees_links_and_skips_code():
    text = ('See [the API](api.md#real-time), ![a map](img/map.png "title") and\n'
            '[ref]: ../bench/RESULTS.md\n'
            'but not `[code](not_a_link.md)` nor\n```\n[block](also_not.md)\n```\n'
            'nor [an autoref][cfcam_fast.cluster.dbscan].\n')
    assert _link_targets(text) == ["api.md#real-time", "img/map.png", "../bench/RESULTS.md"]


def test_forbidden_patterns_match_only_what_they_should():
    hits = {"sibling": "see ../" "shared/notes", "plan": "as " "DESIGN" ".md says",
            "tracker": "fixes " "Issue" " #12", "tracker2": "see " "issue" " 7"}
    clean = {"page": "see docs/api.md and docs/API_notes.md", "word": "the issue is the rounding",
             "plural": "two issues remain", "suffix": "MY_SPEC.md"}
    for text in hits.values():
        assert any(p.search(text) for p in FORBIDDEN.values()), text
    for text in clean.values():
        assert not any(p.search(text) for p in FORBIDDEN.values()), text


def test_relative_links_resolve():
    broken = []
    for page in _markdown_files():
        for target in _link_targets(page.read_text(encoding="utf-8")):
            if SCHEME.match(target) or target.startswith("#"):
                continue  # a web address, or an anchor on the same page (mkdocs --strict checks those)
            path = target.split("#", 1)[0]
            resolved = (page.parent / path).resolve()
            if not resolved.exists() or ROOT not in (resolved, *resolved.parents):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "relative links to files that are not in the repository:\n" + "\n".join(broken)


def test_no_references_outside_the_repository():
    found = []
    for path in _repository_text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for what, pattern in FORBIDDEN.items():
                if pattern.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()[:120]}")
    assert not found, "references to material outside the repository:\n" + "\n".join(found)


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs build needs mkdocs: pip install mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python",
                        reason='the API reference needs mkdocstrings: pip install "mkdocstrings[python]"')
    site = tmp_path / "site"
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                            str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, f"mkdocs build --strict failed:\n{built.stdout}\n{built.stderr}"
    reference = (site / "reference" / "index.html").read_text(encoding="utf-8")
    # The API reference was generated from the docstrings, not left empty.
    assert 'id="cfcam_fast.cluster.dbscan"' in reference
    assert 'id="cfcam_fast.realtime.RealtimeCFCAM"' in reference
