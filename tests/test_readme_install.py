"""The README opens with two commands (install + demo, install + tests), and scripts/test.sh
installs torch's CPU build from the PyTorch CPU index, or from pip's configuration where that
index cannot be reached (issue 14)."""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def test_readme_opens_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S)
    assert first_block is not None
    assert text.index("```bash") < text.index("\n## ")  # before the first section
    commands = [ln for ln in first_block.group(1).splitlines() if ln.strip()]
    assert len(commands) == 2
    assert f"pip install torch==2.13.0 --index-url {CPU_INDEX}" in commands[0]
    assert commands[0].endswith("cqs-attention demo")
    assert commands[1] == "bash scripts/test.sh"
    assert CPU_INDEX in (ROOT / "scripts" / "test.sh").read_text()
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def _fake_tools(tmp_path: Path) -> tuple[Path, Path]:
    """A PATH where ``python`` has no torch and ``pip``/``pytest``/``ruff`` only log."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f"""#!/usr/bin/env bash
if [ "$1" = -c ] && [ "$2" = "import torch" ]; then exit 1; fi
if [ "$1" = -c ]; then exec {sys.executable} "$@"; fi
echo "$*" >> {log}
""")
    (bin_dir / "ruff").write_text("#!/usr/bin/env bash\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir, log


def _run_test_sh(bin_dir: Path, index: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "TORCH_INDEX_URL": index}
    return subprocess.run(["bash", str(ROOT / "scripts" / "test.sh")], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def local_index(tmp_path: Path):
    (tmp_path / "index" / "torch").mkdir(parents=True)
    (tmp_path / "index" / "torch" / "index.html").write_text("<html></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(tmp_path / "index"))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def test_test_sh_uses_the_torch_index_when_reachable(tmp_path: Path, local_index: str) -> None:
    bin_dir, log = _fake_tools(tmp_path)
    proc = _run_test_sh(bin_dir, local_index)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == f"-m pip install -q torch==2.13.0 --index-url {local_index}"
    assert calls[1] == "-m pip install -q -e .[attention,test,plot,transformers]"
    assert calls[2].startswith("-m pytest")


def test_test_sh_falls_back_when_the_index_is_unreachable(tmp_path: Path) -> None:
    bin_dir, log = _fake_tools(tmp_path)
    proc = _run_test_sh(bin_dir, "http://127.0.0.1:9/whl/cpu")  # port 9: connection refused
    assert proc.returncode == 0, proc.stderr
    assert "cannot be reached; installing torch from pip's configured sources" in proc.stderr
    assert log.read_text().splitlines()[0] == "-m pip install -q torch==2.13.0"


def test_ci_scripts_name_only_readme_sections_that_exist() -> None:
    headings = {ln.lstrip("#").strip() for ln in (ROOT / "README.md").read_text().splitlines()
                if ln.startswith("#")}
    for script in (ROOT / ".ci" / "run", ROOT / "scripts" / "test.sh"):
        for section in re.findall(r'README(?:\.md)? "([^"]+)"', script.read_text()):
            assert section in headings, f"{script.name} names README section {section!r}"
