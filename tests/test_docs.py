"""The documentation site builds strictly, its tutorials' code runs, and every link stays inside the repository."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted([DOCS / "index.md", *(DOCS / "tutorials").glob("*.md")])
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _blocks(page: Path, language: str) -> list[str]:
    return [code for lang, code in FENCE.findall(page.read_text()) if lang == language]


def _shrunk(code: str) -> str:
    """The code with every training budget cut (to at most 4096 steps), keeping their ratios where smaller."""
    def cut(match: re.Match[str]) -> str:
        steps = int(match.group(2).replace("_", ""))
        return f"{match.group(1)}={min(max(steps // 20, 512), 4096)}"

    return re.sub(r"(total_steps|total_timesteps)=([\d_]+)", cut, code)


@pytest.mark.timeout(300)
def test_mkdocs_builds_strictly(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr
    for page in ("index.html", "tutorials/training/index.html", "api/vector/index.html", "data-contract/index.html"):
        assert (site / page).is_file(), page
    # The API reference is generated from the docstrings.
    reference = (site / "api" / "vector" / "index.html").read_text()
    assert "SB3VecEnv" in reference and "GymnasiumVectorEnv" in reference


@pytest.mark.timeout(600)
@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_tutorial_code_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    threads = torch.get_num_threads()
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    blocks = _blocks(page, "python")
    assert blocks, f"{page.name} has no Python example"
    try:
        for code in blocks:
            exec(compile(_shrunk(code), str(page), "exec"), namespace)  # the docs' own examples
    finally:
        torch.set_num_threads(threads)


def _commands() -> list[tuple[str, str]]:
    found = []
    for page in [*PAGES, ROOT / "README.md"]:
        for code in _blocks(page, "bash"):
            for line in code.replace("\\\n", " ").splitlines():  # a backslash continues a command
                line = line.split(" #")[0].strip()
                if line.startswith("shoal "):
                    found.append((page.name, line))
    return found


@pytest.mark.parametrize(("page", "command"), _commands())
def test_documented_commands_parse(page: str, command: str) -> None:
    args = shlex.split(command)[1:]
    build_parser().parse_args(args)  # exits (SystemExit) on an unknown command or flag


def test_links_stay_inside_the_repository() -> None:
    for page in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        for target in LINK.findall(page.read_text()):
            assert not target.startswith(("http://", "https://", "/")), f"{page.name} links outside: {target}"
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), f"{page.name}: broken link {target}"
    readme = (ROOT / "README.md").read_text()
    assert "make docs" in readme and "mkdocs serve" in readme
