"""Code fingerprints by definition: which functions, classes and module-level names a result's
code consists of, each with a hash of its code. Reads source files only (no torch, no imports of
the project), so the report checks staleness where torch is not installed.

A run's fingerprint is the closure of the definitions it starts from (the protocol's ``run``,
the classes of its model's modules, the builders, losses and metrics its config names) under
name references: a name a definition uses is followed to the project definition it resolves to,
through ``import`` and ``from ... import`` (re-exports included). The module-level statements
that are neither definitions nor imports (a registration call, an ``if`` block) count as one
more definition of their module, included whenever the module is reached.

A definition's hash is that of its syntax tree without docstrings (comments, docstrings and
formatting do not count; the code does). A fingerprint names each definition as
``path::name``; a result is current while every (name, hash) it lists exists somewhere in the
project, so moving a definition to another module, or editing code the run never reached, marks
nothing stale. The limit of that rule: a name a run resolved to one definition, where a second
definition of the same name and the old code still exists elsewhere, is not noticed. References
the source does not spell out (``getattr`` with a computed name) are not followed: the roots
cover the registries, which are the project's only such lookups.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

PROJECT_PACKAGES = ("seg_core", "ablations")
NOT_RESULT_CODE = ("seg_core.registry", "seg_core.progress")  # name lookups and progress bars
BODY = "<module>"  # the name of a module's other top-level statements


def strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(getattr(body[0], "value", None), ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def node_hash(node: ast.AST) -> str:
    return hashlib.sha256(ast.dump(node, annotate_fields=False).encode()).hexdigest()[:16]


@dataclass
class ModuleCode:
    """One module's definitions (name -> statement), imports (local name -> ("module", dotted) or
    ("from", module, name)) and the rest of its top-level statements."""

    name: str
    path: Path
    definitions: dict[str, ast.stmt] = field(default_factory=dict)
    imports: dict[str, tuple] = field(default_factory=dict)
    body: list[ast.stmt] = field(default_factory=list)

    def hash_of(self, name: str) -> str:
        if name == BODY:
            return node_hash(ast.Module(body=self.body, type_ignores=[]))
        return node_hash(self.definitions[name])


def _assigned_names(stmt: ast.stmt) -> list[str]:
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]  # Assign, AnnAssign
    names = []
    for target in targets:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                names.append(node.id)
    return names


@lru_cache(maxsize=256)
def _parse(path: Path, mtime_ns: int) -> ModuleCode:
    del mtime_ns  # part of the cache key only: an edited file is read again
    tree = strip_docstrings(ast.parse(path.read_text(encoding="utf-8")))
    module = ModuleCode(name="", path=path)
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            module.definitions[stmt.name] = stmt
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            for name in _assigned_names(stmt):
                module.definitions[name] = stmt
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname:
                    module.imports[alias.asname] = ("module", alias.name)
                else:
                    head = alias.name.split(".")[0]
                    module.imports[head] = ("module", head)
        elif isinstance(stmt, ast.ImportFrom):
            if stmt.module == "__future__" or stmt.level:
                continue
            for alias in stmt.names:
                module.imports[alias.asname or alias.name] = ("from", stmt.module, alias.name)
        else:
            module.body.append(stmt)
    return module


class Project:
    """The project's source tree under ``root``, read on demand."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path_of(self, module: str) -> Path | None:
        if module.split(".")[0] not in PROJECT_PACKAGES or module in NOT_RESULT_CODE:
            return None
        base = self.root.joinpath(*module.split("."))
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path
        return None

    def module(self, name: str) -> ModuleCode | None:
        path = self.path_of(name)
        if path is None:
            return None
        code = _parse(path, path.stat().st_mtime_ns)
        code.name = name
        return code

    def key(self, module: ModuleCode, name: str) -> str:
        return f"{module.path.relative_to(self.root).as_posix()}::{name}"

    # ---------------------------------------------------------------- resolving a name
    def resolve(self, module: ModuleCode, chain: list[str], seen: frozenset = frozenset()) -> list[tuple]:
        """(module, definition name) pairs a dotted name used in ``module`` stands for."""
        head, rest = chain[0], chain[1:]
        if (module.name, head) in seen:
            return []
        if head in module.definitions:
            return [(module, head)]
        target = module.imports.get(head)
        if target is None:
            return []
        if target[0] == "module":
            return self._in_module(target[1], rest, seen)
        _, source, name = target
        submodule = f"{source}.{name}"
        if self.path_of(submodule) is not None:
            return self._in_module(submodule, rest, seen)
        other = self.module(source)
        return [] if other is None else self.resolve(other, [name, *rest], seen | {(module.name, head)})

    def _in_module(self, dotted: str, rest: list[str], seen: frozenset) -> list[tuple]:
        while rest and self.path_of(f"{dotted}.{rest[0]}") is not None:  # a submodule
            dotted, rest = f"{dotted}.{rest[0]}", rest[1:]
        module = self.module(dotted)
        if module is None:
            return []
        if not rest:  # the module itself, as an object: all of it
            return [(module, name) for name in module.definitions]
        return self.resolve(module, rest, seen)

    # ------------------------------------------------------------------- the closure
    def fingerprint(self, roots: list[tuple[str, str]]) -> dict[str, str]:
        """``{path::name: hash}`` of the definitions ``roots`` ((module, top-level name) pairs;
        the name :data:`BODY` for code in a module's other statements, e.g. a registered lambda)
        reach, the reached modules' other statements included."""
        stack = []
        for module_name, name in roots:
            module = self.module(module_name)
            if module is not None:
                stack.extend([(module, BODY)] if name == BODY else self.resolve(module, [name]))
        out: dict[str, str] = {}
        done: set[tuple[str, str]] = set()
        while stack:
            module, name = stack.pop()
            if (module.name, name) in done:
                continue
            done.add((module.name, name))
            if name == BODY:
                if module.body:
                    out[self.key(module, BODY)] = module.hash_of(BODY)
                    stack.extend(self._references(module, ast.Module(body=module.body, type_ignores=[])))
                continue
            out[self.key(module, name)] = module.hash_of(name)
            stack.extend(self._references(module, module.definitions[name]))
            stack.append((module, BODY))  # a module's other statements come with any of its definitions
        return dict(sorted(out.items()))

    def _references(self, module: ModuleCode, node: ast.AST) -> list[tuple]:
        found = []
        for chain in _name_chains(node):
            found.extend(self.resolve(module, chain))
        return found

    # ------------------------------------------------------------------ staleness
    def changed(self, fingerprint: dict[str, str]) -> list[str]:
        """The definitions of a fingerprint whose code exists nowhere in the project now."""
        files = tuple(
            (path, path.stat().st_mtime_ns)
            for package in PROJECT_PACKAGES
            for path in sorted((self.root / package).rglob("*.py"))
        )
        current = _definitions_index(files)
        return [key for key, digest in sorted(fingerprint.items()) if (key.split("::", 1)[1], digest) not in current]


@lru_cache(maxsize=4)
def _definitions_index(files: tuple[tuple[Path, int], ...]) -> frozenset[tuple[str, str]]:
    """(name, hash) of every definition in these files (and of each module's other statements)."""
    found = set()
    for path, mtime_ns in files:
        module = _parse(path, mtime_ns)
        found.update((name, module.hash_of(name)) for name in module.definitions)
        if module.body:
            found.add((BODY, module.hash_of(BODY)))
    return frozenset(found)


def _name_chains(node: ast.AST) -> list[list[str]]:
    """Every name a node's code uses, as dotted chains (``engine.train`` -> [engine, train])."""
    chains: list[list[str]] = []

    class Visitor(ast.NodeVisitor):
        def visit_Attribute(self, attr: ast.Attribute) -> None:
            parts = [attr.attr]
            value = attr.value
            while isinstance(value, ast.Attribute):
                parts.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name):
                chains.append([value.id, *reversed(parts)])
            else:
                self.visit(value)

        def visit_Name(self, name: ast.Name) -> None:
            chains.append([name.id])

    Visitor().visit(node)
    return chains
