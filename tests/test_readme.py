"""The README keeps its promises: every ```python block runs (on the CPU, in a temporary folder
holding the demo photos as demo/<name>), the code fences close, the links and anchors resolve, the
CLI synopsis names only options that exist (and every option of `matte` and `catalog run` is
documented), the two setup commands are there verbatim, the sections come in the order a new user
needs them, and no development history (issue numbers) is left in it.

Blocks that need a GPU or the network must not be ```python blocks: use ```bash or ```text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")

SETUP_COMMANDS = [
    "bash scripts/demo.sh   # the main job: install, fetch the default model, cut out the demo photos into outputs/",
    "bash scripts/test.sh   # the tests (CI runs this through .ci/run)",
]
#: The order a new user meets things in; the rest of the README follows these.
FIRST_SECTIONS = ["## Setup", "## Command line", "## Python API", "## Service"]
PICTURE = "docs/before_after.png"


def fences(text: str) -> list[tuple[int, str, str]]:
    """(line number, info string, body) of every fenced block; raises on a fence left open."""
    blocks: list[tuple[int, str, str]] = []
    current: tuple[int, str, list[str]] | None = None
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            if current is None:
                current = (n, line.lstrip()[3:].strip(), [])
            else:
                assert line.strip() == "```", (f"README.md:{n}: a fence opens inside the block opened at line "
                                                f"{current[0]}")
                blocks.append((current[0], current[1], "\n".join(current[2])))
                current = None
        elif current is not None:
            current[2].append(line)
    assert current is None, f"README.md:{current[0]}: this fence is never closed"
    return blocks


def python_blocks() -> list[tuple[int, str]]:
    return [(n, body) for n, info, body in fences(TEXT) if info == "python"]


def test_fences_close_and_say_their_language():
    blocks = fences(TEXT)
    assert blocks
    for n, info, _ in blocks:
        assert info in ("python", "bash", "text"), f"README.md:{n}: fence without a language (or an unknown one)"


def test_python_examples_exist():
    assert len(python_blocks()) >= 2


@pytest.mark.parametrize("line, code", python_blocks(), ids=[f"README.md:{n}" for n, _ in python_blocks()])
def test_python_block_runs(line, code, tmp_path, monkeypatch):
    import cvmatte
    from cvmatte.samples import write_demo_photos

    class CpuMatter(cvmatte.Matter):
        """The examples' Matter, on the CPU whatever the machine has."""

        def __init__(self, *args, **kwargs):
            assert len(args) < 3, "pass device= by keyword in README examples"
            kwargs["device"] = "cpu"
            super().__init__(*args, **kwargs)

    write_demo_photos(tmp_path / "demo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cvmatte, "Matter", CpuMatter)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})  # a raise fails the test


def test_setup_commands_verbatim_and_sections_in_order():
    lines = TEXT.splitlines()
    for command in SETUP_COMMANDS:
        assert command in lines
    headings = [line for line in lines if line.startswith("## ")]
    positions = []
    for prefix in FIRST_SECTIONS:
        found = [i for i, h in enumerate(headings) if h.startswith(prefix)]
        assert found, f"no section starting {prefix!r}"
        positions.append(found[0])
    assert positions == list(range(len(FIRST_SECTIONS))), f"the first sections must be {FIRST_SECTIONS}: {headings}"


def test_picture_first():
    from PIL import Image

    first_section = TEXT.index("\n## ")
    assert f"]({PICTURE})" in TEXT[:first_section], "the before/after picture belongs at the top"
    path = ROOT / PICTURE
    assert path.stat().st_size < 600_000
    with Image.open(path) as im:
        assert im.format == "PNG" and 1000 <= im.width <= 1400


def test_no_issue_numbers():
    found = re.findall(r".{0,30}\bissues?\s*#?\d+.{0,10}", TEXT, flags=re.IGNORECASE)
    assert not found, f"development history belongs in benchmarks/NOTES.md: {found}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_resolve():
    anchors = {slug(line.lstrip("#")) for line in TEXT.splitlines() if line.startswith("#")}
    prose = re.sub(r"```.*?```", "", TEXT, flags=re.DOTALL)
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if target.startswith(("http://", "https://")):
            continue
        if target.startswith("#"):
            assert target[1:] in anchors, f"no heading for the link {target}"
        else:
            assert (ROOT / target.split("#")[0]).exists(), f"the README links to a missing file: {target}"


def synopsis() -> dict[tuple[str, ...], set[str]]:
    """Command words -> the options the README's synopsis gives them."""
    [body] = [body for _, info, body in fences(TEXT) if info == "text" and body.startswith("cvmatte matte ")]
    commands: dict[tuple[str, ...], set[str]] = {}
    current: set[str] = set()
    for line in body.splitlines():
        line = line.split("  #")[0]
        if line.startswith("cvmatte "):
            words = tuple(w for w in line.split()[1:3] if re.fullmatch(r"[a-z]+", w))
            words = words if words[:1] == ("catalog",) else words[:1]
            current = commands.setdefault(words, set())
        current.update(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", line))
    return commands


def test_cli_synopsis_matches_the_cli():
    import typer.main

    from cvmatte import cli

    group = typer.main.get_command(cli.app)

    def options(command) -> set[str]:
        return {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")} | {"-h", "--help"}

    given = synopsis()
    assert ("matte",) in given and ("catalog", "run") in given
    for words, flags in given.items():
        command = group
        for w in words:
            command = command.commands[w]
        unknown = flags - options(command)
        assert not unknown, f"the README's `cvmatte {' '.join(words)}` names options the CLI lacks: {sorted(unknown)}"
    # Every option of the two everyday commands is documented somewhere in the README.
    for words in (("matte",), ("catalog", "run")):
        command = group
        for w in words:
            command = command.commands[w]
        missing = [p.opts[0] for p in command.params if p.opts[0].startswith("-") and p.name != "help"
                   and not any(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", TEXT)
                               for o in (*p.opts, *p.secondary_opts))]
        assert not missing, f"`cvmatte {' '.join(words)}` options the README does not mention: {sorted(missing)}"
