#!/usr/bin/env python
"""Measure parkml's style from the files (issue 15's table): the notebooks' JSON and the AST of parkml/*.py.

    python tools/style_report.py [--root PATH] [--json]

Nothing is imported from the measured code, so it runs on any checkout (another worktree, an old commit)."""
from __future__ import annotations
import argparse, ast, io, json, re, statistics, sys, tokenize
from pathlib import Path

DIRECTIVE = re.compile(r'^\s*#\s*\|\s*(\w+)')
EXPORTS = {'export', 'exports', 'exporti'}
MAX_FUNC_LINES = 60  # a function longer than this is listed
MAX_PARAMS = 8  # a function with more parameters than this is listed
LONG_LINE = 120  # a line longer than this counts as long


def directives(src: str) -> set:
    "The nbdev directives (`#| export`, `#| hide`, ...) of a cell's source"
    return {m.group(1) for line in src.splitlines() if (m := DIRECTIVE.match(line))}


def notebook_cells(root: Path) -> list:
    "(notebook name, source) of every code cell of the library notebooks (those with `#| default_exp`)"
    out = []
    for nb in sorted((root / 'nbs').glob('*.ipynb')):
        cells = [c for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code']
        srcs = [''.join(c['source']) for c in cells]
        if any('default_exp' in directives(s) for s in srcs):
            out += [(nb.name, s) for s in srcs]
    return out


def code_lines(src: str) -> list:
    "The non-blank lines of a cell that are not nbdev directives"
    return [ln for ln in src.splitlines() if ln.strip() and not DIRECTIVE.match(ln)]


def percentile(xs: list, p: float) -> float:
    "The `p` percentile of `xs` (nearest rank)"
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, round(p / 100 * len(xs) + 0.5) - 1))] if xs else 0


def top_definitions(src: str) -> int:
    "Number of top-level functions and classes in a cell (0 when it does not parse)"
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return 0
    return sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in tree.body)


def cell_figures(root: Path) -> dict:
    "Export cell sizes, definitions per export cell and example cells per export cell"
    cells = notebook_cells(root)
    export = [(nb, s) for nb, s in cells if directives(s) & EXPORTS]
    examples = [s for nb, s in cells if not directives(s) & (EXPORTS | {'hide', 'default_exp'}) and code_lines(s)]
    sizes = [len(code_lines(s)) for _, s in export]
    defs = [(top_definitions(s), nb) for nb, s in export]
    with_defs = [d for d, _ in defs if d]
    most = max(defs, default=(0, ''))
    return {'export_cells': len(export), 'export_cell_lines_median': statistics.median(sizes) if sizes else 0,
            'export_cell_lines_p90': percentile(sizes, 90), 'export_cell_lines_max': max(sizes, default=0),
            'definitions_per_export_cell': round(sum(with_defs) / len(with_defs), 2) if with_defs else 0,
            'most_definitions_in_a_cell': {'count': most[0], 'notebook': most[1]},
            'example_cells_per_export_cell': round(len(examples) / len(export), 2) if export else 0}


def modules(root: Path) -> dict:
    "Module name -> source of parkml/*.py (without the generated `_modidx.py`)"
    return {p.stem: p.read_text() for p in sorted((root / 'parkml').glob('*.py')) if p.name != '_modidx.py'}


def app_files(root: Path) -> dict:
    "Relative path -> source of the app's Python files"
    return {str(p.relative_to(root)): p.read_text() for p in sorted((root / 'app').rglob('*.py'))}


def params(fn) -> list:
    "Names of a function's parameters, without `self`/`cls`, `*args` and `**kwargs`"
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    return names[1:] if names[:1] in (['self'], ['cls']) else names


def functions(tree) -> list:
    "(qualified name, node) of every function in a module, methods and nested functions included"
    out = []

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f'{prefix}{child.name}'
                if not isinstance(child, ast.ClassDef):
                    out.append((name, child))
                walk(child, name + '.')
            else:
                walk(child, prefix)
    walk(tree, '')
    return out


def comment_lines(src: str) -> set:
    "Line numbers that hold a comment"
    try:
        return {t.start[0] for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type == tokenize.COMMENT}
    except (tokenize.TokenError, SyntaxError):
        return set()


def is_annotated_doc(node) -> bool:
    "An `Annotated[type, 'description', ...]` expression: fastcore's docments reads the description from it"
    return (isinstance(node, ast.Subscript) and ast.unparse(node.value).split('.')[-1] == 'Annotated'
            and isinstance(node.slice, ast.Tuple)
            and any(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.slice.elts[1:]))


def documented_aliases(tree) -> set:
    "Names of a module's top-level type aliases that carry a description (`Severity = Annotated[float, '...']`)"
    return {t.id for n in tree.body if isinstance(n, ast.Assign) and is_annotated_doc(n.value)
            for t in n.targets if isinstance(t, ast.Name)}


def has_docments(fn, comments: set, aliases: set = frozenset()) -> bool:
    """True when every parameter has a comment on its line or before the next parameter, or an annotation that
    describes it (an `Annotated` alias of `aliases` or written in place): what fastcore's docments reads"""
    a = fn.args
    nodes = [x for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ('self', 'cls')]
    if not nodes:
        return False
    ends = [n.lineno for n in nodes[1:]] + [fn.body[0].lineno]

    def described(n, end):
        ann = n.annotation
        if ann is not None and (is_annotated_doc(ann) or (isinstance(ann, ast.Name) and ann.id in aliases)):
            return True
        return any(n.lineno <= ln <= max(n.lineno, end) for ln in comments)
    return all(described(n, end) for n, end in zip(nodes, ends))


def is_public(qualname: str) -> bool:
    "No part of a qualified name is private (dunder methods count as public)"
    return not any(p.startswith('_') and not p.endswith('__') for p in qualname.split('.'))


def function_figures(mods: dict) -> dict:
    "Docments, the longest function, long functions and functions with many parameters"
    rows, documented, candidates = [], 0, 0
    for mod, src in mods.items():
        comments, tree = comment_lines(src), ast.parse(src)
        aliases = documented_aliases(tree)
        for name, fn in functions(tree):
            qual = f'{mod}.{name}'
            lines = fn.end_lineno - fn.lineno + 1
            rows.append((qual, lines, len(params(fn))))
            if is_public(name) and len(params(fn)) >= 3 and '.<locals>' not in qual:
                candidates += 1
                documented += has_docments(fn, comments, aliases)
    longest = max(rows, key=lambda r: r[1], default=('', 0, 0))
    return {'docments_public_3plus': {'documented': documented, 'of': candidates},
            'longest_function': {'name': longest[0], 'lines': longest[1], 'parameters': longest[2]},
            f'functions_over_{MAX_FUNC_LINES}_lines': sorted([[q, n] for q, n, _ in rows if n > MAX_FUNC_LINES],
                                                           key=lambda r: -r[1]),
            f'functions_over_{MAX_PARAMS}_parameters': sorted([[q, p] for q, _, p in rows if p > MAX_PARAMS],
                                                            key=lambda r: -r[1])}


def parkml_imports(tree, mod_names: set) -> tuple:
    "(private names imported from parkml modules, local names bound to parkml modules) of one file"
    private, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            src = (node.module or '').removeprefix('parkml.').removeprefix('parkml')
            if node.level == 0 and not (node.module or '').startswith('parkml'):
                continue
            for a in node.names:
                if not src and a.name in mod_names:
                    aliases[a.asname or a.name] = a.name
                elif a.name.startswith('_') and not a.name.startswith('__'):
                    private.append(f"{src or 'parkml'}.{a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith('parkml.') and a.asname:
                    aliases[a.asname] = a.name.split('.', 1)[1]
    return private, aliases


def private_across(files: dict, mod_names: set) -> list:
    "`module._name` used outside `module` (imported by name or reached as an attribute), with who uses it"
    found = set()
    for path, src in files.items():
        tree = ast.parse(src)
        private, aliases = parkml_imports(tree, mod_names)
        for name in private:
            found.add((name, path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith('_') and not node.attr.startswith('__'):
                base = node.value
                if isinstance(base, ast.Name) and base.id in aliases:
                    found.add((f'{aliases[base.id]}.{node.attr}', path))
                elif (isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name)
                      and base.value.id == 'parkml' and base.attr in mod_names):
                    found.add((f'{base.attr}.{node.attr}', path))
    return sorted(f'{name} (in {path})' for name, path in found if not path.endswith(f"/{name.split('.')[0]}.py"))


def semicolons(src: str) -> int:
    "Statements joined with `;` in a Python source"
    try:
        return sum(t.type == tokenize.OP and t.string == ';'
                   for t in tokenize.generate_tokens(io.StringIO(src).readline))
    except (tokenize.TokenError, SyntaxError):
        return 0


def text_figures(sources: dict) -> dict:
    "`;` joins per 1,000 lines and the share of lines over LONG_LINE characters"
    lines = [ln for src in sources.values() for ln in src.splitlines()]
    n = max(len(lines), 1)
    return {'lines': len(lines), 'semicolon_joins': sum(semicolons(s) for s in sources.values()),
            'semicolons_per_1000_lines': round(1000 * sum(semicolons(s) for s in sources.values()) / n, 1),
            f'pct_lines_over_{LONG_LINE}': round(100 * sum(len(ln) > LONG_LINE for ln in lines) / n, 2)}


def report(root: Path) -> dict:
    "Every figure of the style table for the checkout at `root`"
    root = Path(root)
    mods = modules(root)
    app = app_files(root)
    files = {f'parkml/{m}.py': s for m, s in mods.items()} | app
    sizes = {m: len(s.splitlines()) for m, s in mods.items()}
    biggest = max(sizes, key=sizes.get, default='')
    readme = root / 'README.md'
    return {**cell_figures(root), **function_figures(mods),
            'module_size_max': {'module': biggest, 'lines': sizes.get(biggest, 0)},
            f'modules_over_450_lines': sorted([m, n] for m, n in sizes.items() if n > 450),
            'private_names_across_modules': private_across(files, set(mods)),
            'library': text_figures(mods), 'app': text_figures(app),
            'readme_bytes': readme.stat().st_size if readme.exists() else 0}


def show(r: dict) -> str:
    "The report as the issue's table, one point a line"
    lib, longest = r['library'], r['longest_function']
    over = r[f'functions_over_{MAX_FUNC_LINES}_lines']
    many = r[f'functions_over_{MAX_PARAMS}_parameters']
    rows = [('export cell, non-blank lines, median / p90 / max',
             f"{r['export_cell_lines_median']} / {r['export_cell_lines_p90']} / {r['export_cell_lines_max']}"
             f" ({r['export_cells']} cells)"),
            ('definitions per export cell', f"{r['definitions_per_export_cell']} (most: "
             f"{r['most_definitions_in_a_cell']['count']} in {r['most_definitions_in_a_cell']['notebook']})"),
            ('example cells per export cell', r['example_cells_per_export_cell']),
            ('docments on public functions with 3+ parameters',
             f"{r['docments_public_3plus']['documented']} of {r['docments_public_3plus']['of']}"),
            ('longest function', f"{longest['name']} {longest['lines']} lines, {longest['parameters']} parameters"),
            (f'functions over {MAX_FUNC_LINES} lines', f"{len(over)}: " + ', '.join(f'{q} {n}' for q, n in over)),
            (f'functions with > {MAX_PARAMS} parameters', f"{len(many)}: " + ', '.join(f'{q} {n}' for q, n in many)),
            ('module size, max', f"{r['module_size_max']['module']} {r['module_size_max']['lines']} "
             f"(over 450: {len(r['modules_over_450_lines'])})"),
            ('private names used across modules', f"{len(r['private_names_across_modules'])}: "
             + ', '.join(r['private_names_across_modules'])),
            ('statements joined with `;` per 1,000 lines',
             f"{lib['semicolons_per_1000_lines']} (library, {lib['semicolon_joins']}); "
             f"app {r['app']['semicolons_per_1000_lines']}"),
            (f'lines over {LONG_LINE} characters', f"{lib[f'pct_lines_over_{LONG_LINE}']}% (library); "
             f"app {r['app'][f'pct_lines_over_{LONG_LINE}']}%"),
            ('README', f"{r['readme_bytes'] / 1000:.1f} KB")]
    return '\n'.join(['| point | parkml |', '| --- | --- |'] + [f'| {k} | {v} |' for k, v in rows])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--root', default=str(Path(__file__).resolve().parent.parent), help='checkout to measure')
    p.add_argument('--json', action='store_true', help='print the figures as JSON')
    a = p.parse_args(argv)
    r = report(Path(a.root))
    print(json.dumps(r, indent=1) if a.json else show(r))


if __name__ == '__main__':
    sys.exit(main())
