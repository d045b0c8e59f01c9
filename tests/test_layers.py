"""The import layers (``[tool.importlinter]`` in pyproject.toml, checked by ``lint-imports``): what import-linter
cannot say itself. Every module of spinedx sits in exactly one layer (its exhaustive check stops at the top-level
packages, and interop and studyindex are placed module by module), and no import cycle joins any modules, imports
inside functions included (issue 19: four cycles, each hidden by an import inside a function)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp
import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]


@pytest.fixture(scope="module")
def graph(config: dict) -> grimp.ImportGraph:
    return grimp.build_graph("spinedx", exclude_type_checking_imports=config["exclude_type_checking_imports"],
                             cache_dir=None)


def _contract(config: dict, kind: str) -> dict:
    (contract,) = [c for c in config["contracts"] if c["type"] == kind]
    return contract


def _layer_modules(contract: dict) -> list[list[str]]:
    """Each layer's modules, full names (``(inference)``: an optional layer)."""
    out = []
    for layer in contract["layers"]:
        names = layer.replace(":", "|").split("|")
        out.append([f"spinedx.{n.strip().strip('()')}" for n in names])
    return out


def test_every_module_sits_in_exactly_one_layer(config: dict, graph: grimp.ImportGraph) -> None:
    contract = _contract(config, "layers")
    entries = [m for layer in _layer_modules(contract) for m in layer]
    split = {f"spinedx.{name}" for name in contract["exhaustive_ignores"]}  # placed module by module
    unplaced, twice = [], []
    for module in sorted(graph.modules):
        if module == "spinedx" or module in split:  # the root and the split packages' __init__
            continue
        homes = [e for e in entries if module == e or module.startswith(e + ".")]
        if not homes:
            unplaced.append(module)
        elif len(homes) > 1:
            twice.append(f"{module} in {homes}")
    assert unplaced == [], f"not in any layer of pyproject.toml [tool.importlinter]: {unplaced}; add each where " \
                           "its imports say it belongs (docs/architecture.md, Layers)"
    assert twice == []


def test_no_import_cycle(config: dict, graph: grimp.ImportGraph) -> None:
    """No strongly connected set of modules in the import graph (imports inside functions count), apart from a cycle
    through an import the layer contract explicitly ignores (none now; each one would name who removes it)."""
    ignored = {tuple(s.strip() for s in line.split("->"))
               for line in _contract(config, "layers").get("ignore_imports", [])}
    g = nx.DiGraph()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if (module, imported) not in ignored:
                g.add_edge(module, imported)
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert cycles == []
