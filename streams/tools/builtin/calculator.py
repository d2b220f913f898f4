"""Safe calculator: evaluates arithmetic by walking the AST, never eval()."""

from __future__ import annotations

import ast
import math
import operator
import pathlib

from streams.tools.builtin import ToolError

MAX_EXPONENT = 1000
MAX_DIGITS = 10_000   # largest int we compute
EXACT_DIGITS = 4_000  # below Python's int->str limit (4300); bigger ints print abbreviated

CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _round(x, ndigits=None):
    if ndigits is not None and not isinstance(ndigits, int):
        raise ToolError("round() digits must be an integer")
    return round(x) if ndigits is None else round(x, ndigits)


def _log(x, base=None):
    return math.log(x) if base is None else math.log(x, base)


def _pick(fn):
    return lambda *args: fn(args)


# name -> (function, min args, max args or None for any)
FUNCTIONS = {
    "sqrt": (math.sqrt, 1, 1), "log": (_log, 1, 2), "log10": (math.log10, 1, 1),
    "exp": (math.exp, 1, 1), "sin": (math.sin, 1, 1), "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1), "abs": (abs, 1, 1), "round": (_round, 1, 2),
    "min": (_pick(min), 1, None), "max": (_pick(max), 1, None),
    "floor": (math.floor, 1, 1), "ceil": (math.ceil, 1, 1),
}

BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod, ast.Pow: operator.pow,
}

# friendly names for what we refuse
REFUSED = {
    ast.Attribute: "attribute access", ast.Subscript: "subscripts",
    ast.Lambda: "lambdas", ast.ListComp: "comprehensions", ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions", ast.GeneratorExp: "comprehensions",
    ast.Compare: "comparisons", ast.BoolOp: "boolean operators (and/or)",
    ast.IfExp: "conditional expressions", ast.JoinedStr: "strings",
    ast.List: "lists", ast.Tuple: "tuples", ast.Dict: "dicts", ast.Set: "sets",
    ast.NamedExpr: "assignments (:=)", ast.Starred: "star arguments",
}
BITWISE = {ast.BitXor: "^", ast.BitAnd: "&", ast.BitOr: "|", ast.LShift: "<<", ast.RShift: ">>"}


def _digits(n: int) -> int:
    """Decimal digit count of |n| without str() (which refuses > 4300 digits)."""
    n = abs(n)
    if n == 0:
        return 1
    d = int(n.bit_length() * math.log10(2)) + 1
    return d if n >= 10 ** (d - 1) else d - 1


def _check(value):
    # bit_length is a cheap pre-filter (log2(10) > 3.32); _digits is exact
    if isinstance(value, int) and value.bit_length() > MAX_DIGITS * 3.32:
        if _digits(value) > MAX_DIGITS:
            raise ToolError(f"result too large (more than {MAX_DIGITS} digits)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("result is not a finite number")
    return value


def _power(base, exponent):
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"exponent {_fmt(exponent)} is too large (limit {MAX_EXPONENT})")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent * math.log10(abs(base)) > MAX_DIGITS:
            raise ToolError(f"result too large (more than {MAX_DIGITS} digits)")
    result = base ** exponent
    if isinstance(result, complex):
        raise ToolError("negative number raised to a fractional power is not a real number")
    return result


def _eval(node):
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            if isinstance(node.value, (str, bytes)):
                raise ToolError("strings are not allowed in a calculator expression")
            raise ToolError(f"the constant {node.value!r} is not allowed in a calculator expression")
        return node.value
    if isinstance(node, ast.BinOp):
        op = type(node.op)
        if op in BITWISE:
            hint = "; use ** for powers" if op is ast.BitXor else ""
            raise ToolError(f"operator '{BITWISE[op]}' is not allowed{hint}")
        if op not in BINARY:
            raise ToolError(f"operator {op.__name__} is not allowed")
        left, right = _eval(node.left), _eval(node.right)
        if op is ast.Pow:
            return _check(_power(left, right))
        return _check(BINARY[op](left, right))
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.USub):
            return -_eval(node.operand)
        if isinstance(node.op, ast.UAdd):
            return +_eval(node.operand)
        raise ToolError(f"unary operator {type(node.op).__name__} is not allowed")
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise ToolError(f"unknown name '{node.id}' (allowed: {', '.join(CONSTANTS)})")
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in FUNCTIONS:
            what = f"function '{name}'" if name else "calling this expression"
            raise ToolError(f"{what} is not allowed (allowed: {', '.join(FUNCTIONS)})")
        if node.keywords:
            raise ToolError(f"{name}() takes no keyword arguments")
        fn, lo, hi = FUNCTIONS[name]
        if len(node.args) < lo or (hi is not None and len(node.args) > hi):
            want = f"{lo}" if lo == hi else f"{lo} or more" if hi is None else f"{lo} to {hi}"
            raise ToolError(f"{name}() takes {want} argument(s), got {len(node.args)}")
        return _check(fn(*[_eval(a) for a in node.args]))
    what = REFUSED.get(type(node), type(node).__name__)
    raise ToolError(f"{what}: not allowed in a calculator expression")


def _fmt(value) -> str:
    if isinstance(value, int):
        if _digits(value) <= EXACT_DIGITS:
            return str(value)
        d = _digits(value)
        lead = abs(value) // 10 ** (d - 12)
        sign = "-" if value < 0 else ""
        return f"{sign}{str(lead)[0]}.{str(lead)[1:]}e+{d - 1} ({d} digits)"
    return format(value, ".12g")


def run(arguments: dict, workdir: pathlib.Path) -> dict:
    expression = " ".join(arguments["expression"].split())
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"syntax error in expression: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError):
        raise ToolError("expression could not be parsed") from None
    try:
        value = _eval(tree)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError("result too large for a floating-point number") from None
    except ValueError as exc:  # math domain errors, e.g. sqrt(-1), log(0)
        raise ToolError(f"math error: {exc}") from None
    except RecursionError:
        raise ToolError("expression is nested too deeply") from None
    except TypeError as exc:
        raise ToolError(f"invalid arguments: {exc}") from None
    return {"output": f"{expression} = {_fmt(value)}", "artifacts": []}
