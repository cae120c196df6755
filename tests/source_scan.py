"""AST scans behind two house rules in test_architecture.py: who reads params.yaml
other than pipeline/config.py, and who edits sys.path. Kept apart from the tests
that use them so each stays short; the tests prove every form is caught."""

import ast
import re

PARAMS_PATH = re.compile(r"(^|[/:])params(-[\w-]+)?\.yaml$")  # params.yaml, params-tiny.yaml
PARAMS_NAMES = {"PARAMS_FILE", "TINY_PARAMS"}  # config's path of the file, conftest's of the fixture's
YAML_LOADS = {"safe_load", "load", "full_load", "unsafe_load", "safe_load_all", "load_all"}
PATH_CALLS = {"Path", "str", "fspath", "read_text", "read_bytes", "open"}  # still the file: path or text


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _name(node: ast.AST) -> str:
    return getattr(node, "attr", None) or getattr(node, "id", "")


def _walk(node: ast.AST, opaque) -> list[ast.AST]:
    """``ast.walk`` that does not look inside the calls ``opaque`` names."""
    out, todo = [], [node]
    while todo:
        n = todo.pop()
        out.append(n)
        if not (isinstance(n, ast.Call) and opaque(n)):
            todo.extend(ast.iter_child_nodes(n))
    return out


def _scopes(tree: ast.AST):
    """(scope, its own nodes): the module and each function, nested functions apart."""
    functions = (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    for scope in [tree, *functions]:
        nodes, todo = [], list(ast.iter_child_nodes(scope))
        while todo:
            node = todo.pop()
            nodes.append(node)
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                todo.extend(ast.iter_child_nodes(node))
        yield scope, nodes


class _ParamsScan:
    """One module's reads of params.yaml; ``tests`` for the looser rule of tests."""

    def __init__(self, source: str, tests: bool):
        self.tree, self.tests = ast.parse(source), tests
        # Not paths: docstrings, constants compared with DVC's file keys, text put in a message
        # (f"... {args.params or 'params.yaml'}").
        self.skip = _docstrings(self.tree)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Compare):
                self.skip |= {id(n) for n in [node.left, *node.comparators] if isinstance(n, ast.Constant)}
            elif isinstance(node, ast.FormattedValue):
                self.skip |= {id(n) for n in ast.walk(node.value) if isinstance(n, ast.Constant)}
        self.yaml_mods, self.yaml_funcs = {"yaml"}, set()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                self.yaml_mods |= {a.asname or a.name for a in node.names if a.name == "yaml"}
            elif isinstance(node, ast.ImportFrom) and node.module == "yaml":
                self.yaml_funcs |= {a.asname or a.name for a in node.names if a.name in YAML_LOADS}

    def named(self) -> set[int]:
        """params_show anywhere; in code, any name of the file; in tests, ``REV:params.yaml``."""
        hits = set()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom):
                if any(a.name == "params_show" or (not self.tests and a.name in PARAMS_NAMES)
                       for a in node.names):
                    hits.add(node.lineno)
            elif isinstance(node, (ast.Attribute, ast.Name)):
                if _name(node) == "params_show" or (not self.tests and _name(node) in PARAMS_NAMES):
                    hits.add(node.lineno)
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and id(node) not in self.skip and PARAMS_PATH.search(node.value)
                  and (not self.tests or ":params" in node.value)):
                hits.add(node.lineno)
        return hits

    def names_file(self, expr: ast.AST, held: set[str]) -> bool:
        """``expr`` holds the file's path or text (what ``config.load(...)`` returns does not)."""
        return any((isinstance(n, ast.Constant) and id(n) not in self.skip
                    and PARAMS_PATH.search(str(n.value)))
                   or (isinstance(n, (ast.Name, ast.Attribute)) and _name(n) in PARAMS_NAMES | held)
                   for n in _walk(expr, opaque=lambda c: _name(getattr(c.func, "value", None)) == "config"))

    def held(self, nodes: list[ast.AST], inherited: set[str]) -> set[str]:
        """Names bound to the file's path or text in a scope: assigned, looped or ``with``-ed."""
        held = set(inherited)

        def path_like(value):  # a call other than Path(...), open(...), .read_text() makes something else
            return self.names_file(value, held) and not (
                isinstance(value, ast.Call) and _name(value.func) not in PATH_CALLS)

        for _ in range(3):  # its path, then its text, then another name for either
            for n in nodes:
                if isinstance(n, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and n.value is not None \
                        and path_like(n.value):
                    targets = getattr(n, "targets", None) or [n.target]
                elif isinstance(n, (ast.For, ast.comprehension)) and path_like(n.iter):
                    targets = [n.target]
                elif isinstance(n, ast.withitem) and n.optional_vars and path_like(n.context_expr):
                    targets = [n.optional_vars]
                else:
                    continue
                held |= {x.id for t in targets for x in ast.walk(t) if isinstance(x, ast.Name)}
        return held

    def reads(self, nodes: list[ast.AST], held: set[str]) -> set[int]:
        """YAML loads of the file; in tests, also reads in a scope that never writes it back."""
        hits, reads, writes = set(), [], False
        for n in (n for n in nodes if isinstance(n, ast.Call)):
            f, args = n.func, [*n.args, *(k.value for k in n.keywords)]
            loader = _name(f) in self.yaml_funcs or (
                isinstance(f, ast.Attribute) and f.attr in YAML_LOADS and _name(f.value) in self.yaml_mods)
            if loader and any(self.names_file(a, held) for a in args):
                hits.add(n.lineno)
            if _name(f) not in ("open", "read_text", "read_bytes", "write_text", "write_bytes"):
                continue
            target = f.value if isinstance(f, ast.Attribute) else (n.args[0] if n.args else None)
            if target is None or not self.names_file(target, held):
                continue
            modes = [a.value for a in [*n.args[1:2], *(k.value for k in n.keywords if k.arg == "mode")]
                     if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if _name(f).startswith("write") or any(set(m) & set("wax") for m in modes):
                writes = True
            else:
                reads.append(n.lineno)
        return hits | (set(reads) if self.tests and not writes else set())


def params_readers(source: str, tests: bool = False) -> list[int]:
    """Lines that read params.yaml (or the tiny fixture's) other than through pipeline.config.

    Code (``tests=False``) may not name the file at all: a path literal, a bare or
    qualified ``PARAMS_FILE``, ``git show REV:params.yaml``. Tests make projects, so
    they may copy the file, pass it to ``config.load`` and edit its text (read and
    write it back in one function); they may not parse it (a YAML load of it, or of
    a name holding its path or text), show it from git, nor read it without writing
    it back. Both: ``dvc.api.params_show``. Messages, docstrings and comparisons
    with DVC's file keys are not reads.
    """
    scan = _ParamsScan(source, tests)
    hits, module_held = scan.named(), set()
    for scope, nodes in _scopes(scan.tree):
        held = scan.held(nodes, module_held)  # a function sees the module's names too
        if scope is scan.tree:
            module_held = held
        hits |= scan.reads(nodes, held)
    return sorted(hits)


def function_at(tree: ast.AST, line: int) -> str:
    inner = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
             and n.lineno <= line <= n.end_lineno]
    return max(inner, key=lambda n: n.lineno).name if inner else "<module>"


SYS_PATH_MUTATORS = {"insert", "append", "extend", "remove", "pop", "clear", "reverse", "sort",
                     "__setitem__", "__delitem__", "__iadd__"}


def sys_path_edits(source: str) -> list[int]:
    """Lines that change ``sys.path``: assign, slice-assign, ``+=``, ``del``, its
    mutating methods, ``site.addsitedir``; ``from sys import path`` counts too."""
    tree = ast.parse(source)
    aliases = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
               and n.module == "sys" for a in n.names if a.name == "path"}

    def is_path(n):
        return ((isinstance(n, ast.Attribute) and n.attr == "path" and _name(n.value) == "sys")
                or (isinstance(n, ast.Name) and n.id in aliases))

    hits = set()
    for node in ast.walk(tree):
        targets = (node.targets if isinstance(node, (ast.Assign, ast.Delete)) else
                   [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        for t in (x for t in targets for x in ast.walk(t)):
            if is_path(t) or (isinstance(t, ast.Subscript) and is_path(t.value)):
                hits.add(node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                (node.func.attr in SYS_PATH_MUTATORS and is_path(node.func.value))
                or node.func.attr == "addsitedir"):
            hits.add(node.lineno)
    return sorted(hits)
