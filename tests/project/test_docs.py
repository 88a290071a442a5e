"""The documentation: the MkDocs site builds under ``--strict``, relative links resolve,
no file of the repository points outside it, and the worked examples of
docs/contributing.md run.

``mkdocs build --strict`` checks the links between pages, their anchors and the API
reference's cross-references; the link test here covers what MkDocs does not see: the
README, the changelog and links from docs/ to other files of the repository.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

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
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]


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


def _python_blocks(text: str) -> list[str]:
    """The code of every ```python block of a markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def test_the_api_reference_lists_every_module_of_the_layers():
    """docs/reference.md promises every module of the layers; a new module must be added there."""
    listed = set(re.findall(r"^::: (\S+)", (ROOT / "docs" / "reference.md").read_text(), re.MULTILINE))
    layers = ("core", "cams", "evaluation", "data", "benchmark", "cli")
    missing = []
    for path in sorted((ROOT / "cfcam_fast").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__main__" or len(parts) < 3 or parts[1] not in layers:
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name not in listed:
            missing.append(name)
    assert not missing, f"docs/reference.md lacks {missing}"

def test_python_block_extraction():
    text = "# t\n\n```python\na = 1\n```\n\n```bash\nmake test\n```\n\n```python\nb = a + 1\n```\n"
    assert _python_blocks(text) == ["a = 1\n", "b = a + 1\n"]


def test_contributing_examples_run():
    """Every Python block of docs/contributing.md runs, in order, in one namespace: the
    XGrad-CAM method (defined, used on a model, registered and evaluated) and the metric.
    The registries are restored afterwards."""
    from cfcam_fast.cams.base import BaseCAM
    from cfcam_fast.cams.capture import capture
    from cfcam_fast.evaluation.groups import METRICS
    from cfcam_fast.evaluation.methods import METHODS

    blocks = _python_blocks((ROOT / "docs" / "contributing.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 4, "docs/contributing.md lost its worked examples"
    methods, metrics = dict(METHODS), list(METRICS)
    namespace: dict = {"__name__": "contributing_examples"}
    try:
        for number, block in enumerate(blocks, 1):
            exec(compile(block, f"docs/contributing.md, Python block {number}", "exec"), namespace)
        XGradCAM, model, x = namespace["XGradCAM"], namespace["model"], namespace["x"]
        assert issubclass(XGradCAM, BaseCAM) and METHODS["XGrad-CAM"].cam is XGradCAM
        assert "XGrad-CAM" in namespace["report"].summary
        assert "coverage" in [m.name for m in METRICS]
        # The example's weights are XGrad-CAM's, computed independently from the capture.
        captured = capture(model, x, [model[3]], 3)
        A, G = captured.activations[0].double(), captured.gradients[0].double()
        expected = (G * A).sum(dim=(2, 3)) / (A.sum(dim=(2, 3)) + 1e-7)
        got = XGradCAM(model, [model[3]]).explain(x, 3).channel_weights
        torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-12)
    finally:
        METHODS.clear()
        METHODS.update(methods)
        METRICS[:] = metrics


def test_contributing_example_equals_the_grad_cam_package():
    """The worked example is XGrad-CAM as the grad-cam package computes its weights."""
    grad_cam = pytest.importorskip("pytorch_grad_cam", reason="compares with grad-cam: pip install grad-cam")
    from cfcam_fast.cams.capture import capture

    blocks = _python_blocks((ROOT / "docs" / "contributing.md").read_text(encoding="utf-8"))
    namespace: dict = {"__name__": "contributing_examples"}
    exec(compile(blocks[0], "docs/contributing.md, Python block 1", "exec"), namespace)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(), torch.nn.Conv2d(6, 5, 3),
                                torch.nn.Flatten(), torch.nn.Linear(5 * 8 * 8, 4)).eval()
    x = torch.randn(3, 3, 12, 12)
    captured = capture(model, x, [model[1]], [0, 2, 3])
    A, G = captured.activations[0].double().numpy(), captured.gradients[0].double().numpy()
    theirs = grad_cam.XGradCAM.get_cam_weights(None, None, None, None, A, G)
    ours = namespace["XGradCAM"](model, [model[1]]).explain(x, [0, 2, 3]).channel_weights
    np.testing.assert_allclose(ours.double().numpy(), theirs, rtol=1e-6, atol=1e-12)


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
    # The API reference was generated from the docstrings, not left empty: the public faces
    # under their public names, then the layers' modules where each name is defined.
    faces = ["cfcam_fast.backend_status", "cfcam_fast.metrics.road", "cfcam_fast.cluster.dbscan",
             "cfcam_fast.plan.Plan", "cfcam_fast.viz.overlay", "cfcam_fast.kernels",
             "cfcam_fast.integrations.grad_cam.CFCAM", "cfcam_fast.integrations.torchcam.CFCAM"]
    layers = ["cfcam_fast.core.explain.cfcam_explain", "cfcam_fast.core.config.CFCAMResult.model_outputs",
              "cfcam_fast.cams.base.BaseCAM", "cfcam_fast.cams.targets.per_image",
              "cfcam_fast.cams.realtime.RealtimeCFCAM", "cfcam_fast.evaluation.evaluate.evaluate",
              "cfcam_fast.evaluation.methods.Method", "cfcam_fast.evaluation.groups.Metric",
              "cfcam_fast.data.models", "cfcam_fast.benchmark.runner", "cfcam_fast.cli.argtypes"]
    where = {}
    for ident in faces + layers:
        where[ident] = reference.find(f'id="{ident}"')
        assert where[ident] >= 0, f"the API reference has no entry {ident}"
    assert max(where[f] for f in faces) < min(where[m] for m in layers), "the public faces come first"
    # The changelog is a page of the site, and the links to ../CHANGELOG.md point to it.
    assert "Keep a Changelog" in (site / "changelog" / "index.html").read_text(encoding="utf-8")
    assert 'href="changelog/"' in (site / "index.html").read_text(encoding="utf-8")
