"""The boundaries of docs/architecture.md that import contracts cannot express (those are in pyproject.toml's
[tool.importlinter], run by `make lint`): which names a module may take from another, and which model
internals only the adapters touch. Walks the source with `ast`; no model is loaded."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "flowroutes"

#: attributes of a transformers model that only the family adapters (models/) call
ADAPTER_ONLY = {"get_output_embeddings", "get_input_embeddings"}

#: module -> names it must not import from the package: importance works on weights and head indices, not adapters
FORBIDDEN_NAMES = {"importance.py": {"Adapter"}, "kernels.py": {"Adapter"}}


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(PACKAGE)}:{node.lineno}"


def test_only_adapters_call_model_internals():
    found = []
    for path in _modules():
        if path.relative_to(PACKAGE).parts[0] == "models":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ADAPTER_ONLY:
                found.append(f"{_where(path, node)} calls {node.attr}: use the adapter (e.g. Adapter.unembedding())")
    assert not found, "\n".join(found)


def test_modules_take_only_allowed_names():
    found = []
    for name, names in FORBIDDEN_NAMES.items():
        path = PACKAGE / name
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                bad = names & {alias.name for alias in node.names}
                found += [f"{_where(path, node)} imports {b}" for b in sorted(bad)]
    assert not found, "\n".join(found)
