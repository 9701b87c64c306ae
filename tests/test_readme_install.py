"""The README opens with two commands (install + demo, install + tests); scripts/install.sh
installs torch's CPU build from the PyTorch CPU index, or, after one short try, from pip's
configuration where that index cannot be reached, and scripts/test.sh installs through it
(issues 14 and "no silent minute")."""

from __future__ import annotations

import functools
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time
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
    assert commands[0] == "bash scripts/install.sh && cqs-attention demo"
    assert commands[1] == "bash scripts/test.sh"
    install = (ROOT / "scripts" / "install.sh").read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in install  # as documented
    assert "torch==2.13.0" in install
    assert "bash scripts/install.sh attention,test,plot,transformers" in \
        (ROOT / "scripts" / "test.sh").read_text()
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    # the README shows the pytorch.org command the script runs
    assert f"pip install torch==2.13.0 --index-url {CPU_INDEX}" in text


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


def _run_script(bin_dir: Path, index: str, script: str = "test.sh", *args: str,
                **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "TORCH_INDEX_URL": index, **env_extra}
    return subprocess.run(["bash", str(ROOT / "scripts" / script), *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _run_test_sh(bin_dir: Path, index: str) -> subprocess.CompletedProcess[str]:
    return _run_script(bin_dir, index)


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


def test_install_sh_installs_the_attention_extra(tmp_path: Path, local_index: str) -> None:
    bin_dir, log = _fake_tools(tmp_path)
    proc = _run_script(bin_dir, local_index, "install.sh")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert log.read_text().splitlines() == [
        f"-m pip install -q torch==2.13.0 --index-url {local_index}",
        "-m pip install -q -e .[attention]"]


def test_install_sh_keeps_an_installed_torch(tmp_path: Path) -> None:
    bin_dir, log = _fake_tools(tmp_path)
    python = bin_dir / "python"
    python.write_text(python.read_text().replace('"import torch" ]; then exit 1',
                                                 '"import torch" ]; then exit 0'))
    proc = _run_script(bin_dir, "http://127.0.0.1:9/whl/cpu", "install.sh", "attention,test")
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().splitlines() == ["-m pip install -q -e .[attention,test]"]


@pytest.fixture
def silent_index():
    """An index that accepts connections and never answers (a blackholed network)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"http://127.0.0.1:{server.getsockname()[1]}/whl/cpu"
    server.close()


def test_install_sh_gives_up_on_a_silent_index_after_one_short_try(tmp_path: Path,
                                                                   silent_index: str) -> None:
    """Issue: on a machine whose pip reaches only PyPI, the index was retried 50 times."""
    bin_dir, log = _fake_tools(tmp_path)
    start = time.monotonic()
    proc = _run_script(bin_dir, silent_index, "install.sh", TORCH_INDEX_TIMEOUT="2")
    assert time.monotonic() - start < 60  # one 2 s try, not retries
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"scripts/install.sh: {silent_index} cannot be reached; installing torch from pip's "
        "configured sources"]
    assert log.read_text().splitlines() == ["-m pip install -q torch==2.13.0",
                                            "-m pip install -q -e .[attention]"]
