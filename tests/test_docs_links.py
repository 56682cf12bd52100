"""README.md and the pages under docs/ link only to what exists: every relative link and image resolves to a file in the
repository, every `#anchor` to a heading of its page (GitHub's heading ids), and every measurement file named in code
(`docs/results/...`) is there."""

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_PATH = re.compile(r"`(docs/[^`\s]+)`")


def _strip_code(text: str) -> str:
    """The page without fenced code blocks (their brackets are code, not links)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def _slug(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation dropped (letters of any script, digits, '-' and '_' kept),
    spaces to hyphens."""
    heading = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    kept = "".join(ch for ch in heading if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(page: Path) -> set:
    seen, ids = {}, set()
    for line in _strip_code(page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = _slug(match.group(1))
            ids.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return ids


def test_slug_follows_github():
    assert _slug("VAE and β-VAE") == "vae-and-β-vae"
    assert _slug("Pixel diffusion: DDPM and DDIM") == "pixel-diffusion-ddpm-and-ddim"
    assert _slug("torch.compile trains a broken model") == "torchcompile-trains-a-broken-model"
    assert _slug("Instruction editing (InstructPix2Pix)") == "instruction-editing-instructpix2pix"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_images_resolve(page):
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in LINK.findall(_strip_code(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with id {anchor!r} in {file.relative_to(ROOT)}")
    for path in CODE_PATH.findall(text):
        if not any(ch in path for ch in "*{}<>$") and not (ROOT / path.rstrip(".,;:")).exists():
            broken.append(f"`{path}`: no such file")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)
