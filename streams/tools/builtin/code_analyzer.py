"""Static analysis of Python source: metrics from the AST plus pyflakes. Never runs the code."""

from __future__ import annotations

import ast
import io
import pathlib
import tokenize

from streams.tools.builtin import ToolError

MAX_LISTED = 40
COMPLEX = 10
BLOCKS = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try,
          ast.TryStar, ast.Match, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
SCOPES = FUNCS + (ast.ClassDef, ast.Lambda)


def _line_counts(code: str) -> tuple[int, int, int, int]:
    lines = code.splitlines()
    code_lines, comment_lines = set(), set()
    skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
            tokenize.DEDENT, tokenize.ENDMARKER)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.COMMENT:
                comment_lines.add(tok.start[0])
            elif tok.type not in skip:  # multi-line strings count as code on every line
                code_lines.update(range(tok.start[0], tok.end[0] + 1))
    except (tokenize.TokenError, SyntaxError):
        code_lines = {i for i, s in enumerate(lines, 1) if s.strip() and not s.lstrip().startswith("#")}
        comment_lines = {i for i, s in enumerate(lines, 1) if s.lstrip().startswith("#")}
    comment_only = comment_lines - code_lines
    blank = sum(1 for i, s in enumerate(lines, 1) if not s.strip() and i not in code_lines)
    return len(lines), len(code_lines), len(comment_only), blank


def _walk_own(node: ast.AST):
    """Nodes inside a function body, not descending into nested functions/classes."""
    for child in ast.iter_child_nodes(node):
        yield child
        if not isinstance(child, FUNCS + (ast.ClassDef,)):
            yield from _walk_own(child)


def _complexity(func: ast.AST) -> int:
    score = 1
    for node in _walk_own(func):
        if isinstance(node, (ast.If, ast.For, ast.AsyncFor, ast.While, ast.ExceptHandler,
                             ast.With, ast.AsyncWith, ast.Assert, ast.IfExp, ast.match_case)):
            score += 1
        elif isinstance(node, ast.BoolOp):
            score += len(node.values) - 1
        elif isinstance(node, ast.comprehension):
            score += len(node.ifs)
    return score


def _max_depth(node: ast.AST, depth: int = 0) -> tuple[int, int]:
    """(deepest block nesting, line where it occurs); an elif is not an extra level."""
    best = (depth, getattr(node, "lineno", 0))
    for child in ast.iter_child_nodes(node):
        is_elif = (isinstance(node, ast.If) and isinstance(child, ast.If) and node.orelse == [child]
                   and child.col_offset == node.col_offset)
        inner = depth + 1 if isinstance(child, BLOCKS) and not is_elif else depth
        best = max(best, _max_depth(child, inner), key=lambda d: d[0])
    return best


def _definitions(tree: ast.AST):
    """(qualified name, node) for every function and class, in source order."""
    found = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, FUNCS + (ast.ClassDef,)):
                name = prefix + child.name
                found.append((name, child))
                visit(child, name + ".")
            else:
                visit(child, prefix)
    visit(tree, "")
    return found


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            names.append(f"{module} ({', '.join(a.name for a in node.names)})")
    return list(dict.fromkeys(names))


def _findings(tree: ast.AST, defs, complexities) -> list[tuple[int, str]]:
    from pyflakes.checker import Checker  # lazy: only this tool needs it

    found = [(m.lineno, m.message % m.message_args) for m in Checker(tree, filename="<code>").messages]
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.type is None:
            found.append((node.lineno, "bare 'except:' also catches KeyboardInterrupt/SystemExit; "
                                       "name the exception"))
        elif isinstance(node, FUNCS + (ast.Lambda,)):
            for default in node.args.defaults + [d for d in node.args.kw_defaults if d]:
                mutable = isinstance(default, (ast.List, ast.Dict, ast.Set)) or (
                    isinstance(default, ast.Call) and isinstance(default.func, ast.Name)
                    and default.func.id in ("list", "dict", "set"))
                if mutable:
                    found.append((default.lineno, "mutable default argument is shared between "
                                                  "calls; use None and create it inside"))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("eval", "exec")):
            found.append((node.lineno, f"use of {node.func.id}() runs arbitrary code"))
    for (name, node), score in zip(defs, complexities):
        if score is not None and score > COMPLEX:
            found.append((node.lineno, f"function '{name}' has cyclomatic complexity {score} "
                                       f"(over {COMPLEX}); consider splitting it"))
    return sorted(set(found))


def _capped(items: list[str]) -> list[str]:
    extra = len(items) - MAX_LISTED
    return items[:MAX_LISTED] + ([f"... and {extra} more"] if extra > 0 else [])


def run(arguments: dict, workdir: pathlib.Path) -> dict:
    code = arguments["code"]
    if arguments.get("language", "python") != "python":
        raise ToolError("only Python code can be analysed")
    try:
        tree = ast.parse(code, filename="<code>")
    except SyntaxError as exc:
        where = f" at line {exc.lineno}" if exc.lineno else ""
        where += f", column {exc.offset}" if exc.lineno and exc.offset else ""
        raise ToolError(f"syntax error{where}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ToolError(f"code could not be parsed: {str(exc) or 'nested too deeply'}") from None

    total, code_n, comments, blank = _line_counts(code)
    try:  # the helpers recurse over the tree
        defs = _definitions(tree)
        complexities = [_complexity(n) if isinstance(n, FUNCS) else None for _, n in defs]
        depth, depth_line = _max_depth(tree)
        findings = _findings(tree, defs, complexities)
    except RecursionError:
        raise ToolError("code is nested too deeply to analyse") from None

    out = [f"lines: {total} total, {code_n} code, {comments} comment, {blank} blank",
           f"max nesting depth: {depth}" + (f" (line {depth_line})" if depth else "")]
    imports = _imports(tree)
    out.append("imports: " + (", ".join(_capped(imports)) if imports else "none"))
    funcs = [f"| {name} | {node.lineno} | {score} |"
             for (name, node), score in zip(defs, complexities) if score is not None]
    if funcs:
        out += [f"\nfunctions ({len(funcs)}):", "| name | line | complexity |", "|---|---|---|"]
        out += _capped(funcs)
    classes = [f"| {name} | {node.lineno} | {sum(isinstance(b, FUNCS) for b in node.body)} |"
               for name, node in defs if isinstance(node, ast.ClassDef)]
    if classes:
        out += [f"\nclasses ({len(classes)}):", "| name | line | methods |", "|---|---|---|"]
        out += _capped(classes)
    out.append(f"\nfindings ({len(findings)}):" if findings else "\nfindings: none")
    out += _capped([f"- line {line}: {msg}" for line, msg in findings])
    return {"output": "\n".join(out), "artifacts": []}
