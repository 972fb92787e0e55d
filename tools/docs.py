#!/usr/bin/env python
"""Build the docs site `_docs/` and README.md from the notebooks, offline.

    python tools/docs.py [--root PATH] [--readme-only]

Each notebook `nbs/NN_name.ipynb` becomes `_docs/name.html` (a page with a sidebar) and `_docs/name.html.md` (the
same page as Markdown, the address the modules' `Docs:` lines give); `nbs/index.ipynb` is the front page and README.md.
Exported definitions are shown as their signature, docstring and docments table, with the source folded; cells
marked `#| output: asis` are run (in the notebook's order, in one namespace per notebook) and their printed Markdown
takes their place, so generated references (settings, commands) are never stale.

Why not Quarto (what `nbdev-docs` and `nbdev-readme` run): it is not on PyPI as a wheel; `quarto-cli`'s sdist downloads
Quarto from GitHub while it builds, and this project installs from the package registries only. The notebooks are
processed here instead and rendered with nbconvert's Markdown renderer (mistune, pygments), which the project has."""
from __future__ import annotations
import argparse, ast, contextlib, html, io, json, re, shutil, sys, tokenize
from pathlib import Path

DOC_HOST = 'https://parkml.github.io/parkml'
DIRECTIVE = re.compile(r'^\s*#\s*\|\s*([\w-]+)\s*:?\s*(.*)$')
SKIP = {'hide', 'default_exp', 'exporti'}
EXPORTS = {'export', 'exports'}
GROUPS = [(0, 'Core'), (10, 'Serving'), (20, 'Monitoring and governance'), (30, 'Command line'),
          (40, 'Trace, audit, people, app'), (50, 'Papermill notebooks'), (60, 'The week')]


def cell_directives(src: str) -> dict:
    "nbdev directives of a cell (`#| output: asis` -> {'output': 'asis'})"
    out = {}
    for line in src.splitlines():
        if m := DIRECTIVE.match(line):
            out[m.group(1)] = m.group(2).strip()
    return out


def strip_directives(src: str) -> str:
    "A cell's source without its directive lines"
    return '\n'.join(ln for ln in src.splitlines() if not DIRECTIVE.match(ln)).strip('\n')


def page_name(nb: Path) -> str:
    "`24_staging.ipynb` -> `staging` (nbdev's page names: the numeric prefix dropped)"
    return re.sub(r'^\d+[a-z]*_', '', nb.stem)


def notebooks(root: Path) -> list:
    "(notebook, page name) of every notebook; a page name two notebooks share keeps the later one's number"
    seen, out = set(), []
    for nb in sorted((root / 'nbs').glob('*.ipynb')):
        name = page_name(nb)
        out.append((nb, nb.stem if name in seen else name))
        seen.add(name)
    return out


def load_cells(nb: Path) -> list:
    "(cell type, source) of a notebook's cells"
    return [(c['cell_type'], ''.join(c['source'])) for c in json.loads(nb.read_text())['cells']]


def definitions(src: str) -> list:
    "Top-level public functions and classes of a cell (none when it does not parse)"
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return []
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return [n for n in tree.body if isinstance(n, kinds) and not n.name.startswith('_')]


def symbols(pages: list) -> dict:
    "Name -> page of every public definition exported by a notebook (the first notebook wins)"
    out = {}
    for nb, page in pages:
        for kind, src in load_cells(nb):
            if kind == 'code' and set(cell_directives(src)) & EXPORTS:
                for d in definitions(src):
                    out.setdefault(d.name, page)
    return out


def comments(src: str) -> dict:
    "Line number -> comment text of a source"
    try:
        toks = tokenize.generate_tokens(io.StringIO(src).readline)
        return {t.start[0]: t.string.lstrip('#').strip() for t in toks if t.type == tokenize.COMMENT}
    except (tokenize.TokenError, SyntaxError):
        return {}


def annotated_doc(ann, aliases: dict) -> str:
    "The description an annotation carries: `Annotated[type, 'description']`, or the name of such an alias"
    if isinstance(ann, ast.Name):
        return aliases.get(ann.id, '')
    if isinstance(ann, ast.Subscript) and ast.unparse(ann.value).split('.')[-1] == 'Annotated' and \
            isinstance(ann.slice, ast.Tuple):
        return next((e.value for e in ann.slice.elts[1:] if isinstance(e, ast.Constant) and isinstance(e.value, str)),
                    '')
    return ''


def documented_aliases(cells: list) -> dict:
    "Type aliases with a description defined by a notebook's export cells: name -> description (`Rng = Annotated[...]`)"
    out = {}
    for kind, src in cells:
        if kind != 'code' or not set(cell_directives(src)) & EXPORTS:
            continue
        try:
            tree = ast.parse(strip_directives(src))
        except SyntaxError:
            continue
        for n in tree.body:
            if isinstance(n, ast.Assign) and (doc := annotated_doc(n.value, {})):
                out.update({t.id: doc for t in n.targets if isinstance(t, ast.Name)})
    return out


def docments(fn, notes: dict, aliases: dict = None) -> list:
    """(parameter, annotation, default, comment) of a function, comments taken from its signature (docments), or
    else from an `Annotated` description in its annotation (directly or through one of `aliases`)"""
    a = fn.args
    args = a.posonlyargs + a.args
    defaults = [None] * (len(args) - len(a.defaults)) + list(a.defaults) + list(a.kw_defaults)
    params = [p for p in zip(args + a.kwonlyargs, defaults) if p[0].arg not in ('self', 'cls')]
    ends = [p.lineno for p, _ in params[1:]] + [fn.body[0].lineno]
    rows = []
    for (p, default), end in zip(params, ends):
        note = next((notes[ln] for ln in range(p.lineno, max(p.lineno, end - 1) + 1) if ln in notes), '')
        note = note or (annotated_doc(p.annotation, aliases or {}) if p.annotation else '')
        ann = ast.unparse(p.annotation) if p.annotation else ''
        rows.append((p.arg, ann, '' if default is None else ast.unparse(default), note))
    return rows


def signature(fn) -> str:
    "`def name(params) -> ret` of a function or `class Name(bases)` of a class"
    if isinstance(fn, ast.ClassDef):
        bases = ', '.join(ast.unparse(b) for b in fn.bases)
        return f'class {fn.name}({bases})' if bases else f'class {fn.name}'
    ret = f' -> {ast.unparse(fn.returns)}' if fn.returns else ''
    return f'def {fn.name}({ast.unparse(fn.args)}){ret}'


def api_entry(node, src: str, notes: dict, level: int = 3, aliases: dict = None) -> str:
    "Markdown of one definition: anchor heading, signature, docstring, docments table"
    out = [f'<h{level} id="{node.name}">{node.name}</h{level}>', '', '```python', signature(node), '```', '']
    doc = ast.get_docstring(node)
    if doc:
        out += [doc, '']
    if not isinstance(node, ast.ClassDef):
        rows = docments(node, notes, aliases)
        if any(r[3] for r in rows):
            out += ['| parameter | type | default | what it is |', '| --- | --- | --- | --- |']
            out += [f"| `{n}` | {md_cell(t)} | {md_cell(d)} | {md_cell(c)} |" for n, t, d, c in rows] + ['']
    else:
        for m in node.body:
            if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and not m.name.startswith('_'):
                out.append(api_entry(m, src, notes, 4, aliases).replace(f'id="{m.name}"', f'id="{node.name}.{m.name}"'))
    return '\n'.join(out)


def md_cell(text: str) -> str:
    "Text safe inside a Markdown table cell"
    return f'`{text}`'.replace('|', '\\|') if text and not text[0].isalpha() else text.replace('|', '\\|')


def export_cell(src: str, aliases: dict = None) -> str:
    "Markdown of an export cell: an API entry per definition and the source, folded"
    code = strip_directives(src)
    notes = comments(code)
    entries = [api_entry(d, code, notes, aliases=aliases) for d in definitions(code)]
    fold = ['<details><summary>source</summary>', '', '```python', code, '```', '', '</details>', '']
    return '\n\n'.join(entries + ['\n'.join(fold)]) if entries else ''


def run_asis(src: str, env: dict, where: str) -> str:
    "Run a cell and return what it printed (Markdown to place in the page)"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            exec(compile(strip_directives(src), where, 'exec'), env)
        except Exception as e:
            raise RuntimeError(f'{where}: an `output: asis` cell failed: {e!r}') from e
    return buf.getvalue()


def link_notebooks(md: str, pages: dict, base: str = '') -> str:
    "Links to `NN_name.ipynb` become links to their pages"
    return re.sub(r'\]\((?:\.\./nbs/|nbs/)?([\w-]+)\.ipynb(#[\w.-]+)?\)',
                  lambda m: f"]({base}{pages.get(m.group(1), m.group(1))}.html{m.group(2) or ''})", md)


def link_symbols(md: str, syms: dict, here: str, base: str = '') -> str:
    "`name` in prose (outside code blocks) links to the definition's page"
    def one(m):
        name = m.group(1)
        page = syms.get(name)
        return f"[`{name}`]({'' if page == here and not base else base + page + '.html'}#{name})" if page else m.group(0)
    parts = re.split(r'(```.*?```)', md, flags=re.S)
    return ''.join(p if i % 2 else re.sub(r'(?<![\[\w`])`([A-Za-z_]\w+)`(?![\]\w(])', one, p) for i, p in enumerate(parts))


def page_markdown(nb: Path, page: str, pages: dict, syms: dict, base: str = '') -> str:
    "The Markdown of a notebook's page"
    env, out, cells = {'__name__': f'docs_{page}'}, [], load_cells(nb)
    aliases = documented_aliases(cells)
    for i, (kind, src) in enumerate(cells):
        d = cell_directives(src)
        if kind == 'markdown':
            out.append(link_symbols(link_notebooks(src, pages, base), syms, page, base))
        elif kind != 'code' or set(d) & SKIP or not strip_directives(src).strip():
            continue
        elif d.get('output') == 'asis':
            out.append(run_asis(src, env, f'{nb.name} cell {i}'))
        elif set(d) & EXPORTS:
            out.append(export_cell(src, aliases))
        elif d.get('echo') != 'false':
            out.append(f'```python\n{strip_directives(src)}\n```')
    return '\n\n'.join(o.strip('\n') for o in out if o.strip()) + '\n'


def title(nb: Path) -> str:
    "The notebook's `# Title`"
    for kind, src in load_cells(nb):
        if kind == 'markdown' and src.startswith('# '):
            return src.splitlines()[0][2:].strip()
    return nb.stem


def sidebar(pages: list, here: str) -> str:
    "HTML navigation: the front page, then the notebooks grouped by their number"
    items, group = ['<a href="index.html">parkml</a>'], None
    for nb, page in pages:
        if page == 'index':
            continue
        num = int(m.group(1)) if (m := re.match(r'(\d+)[a-z]*_', nb.name)) else 0
        g = [name for start, name in GROUPS if num >= start][-1]
        if g != group:
            items.append(f'<h4>{g}</h4>')
            group = g
        cls = ' class="here"' if page == here else ''
        items.append(f'<a href="{page}.html"{cls}>{html.escape(title(nb))}</a>')
    return '\n'.join(items)


CSS = """body{margin:0;font:16px/1.5 system-ui,sans-serif;color:#222;display:flex}
nav{width:260px;min-width:260px;height:100vh;overflow:auto;position:sticky;top:0;background:#f6f7f9;padding:1em;
box-sizing:border-box;font-size:14px}nav a{display:block;color:#234;text-decoration:none;padding:2px 0}
nav a.here{font-weight:bold}nav h4{margin:1em 0 .2em;color:#666}main{max-width:60em;padding:1em 2em;overflow:auto}
pre{background:#f4f4f4;padding:.6em;overflow:auto;font-size:13px}code{font-size:90%}
table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top}
details{margin:.3em 0 1.5em}summary{color:#666;cursor:pointer}a.anchor-link{display:none}
"""


def page_html(md: str, nav: str, name: str) -> str:
    "A full HTML page of the site"
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    from pygments.formatters import HtmlFormatter
    body = markdown2html_mistune(md)
    style = CSS + HtmlFormatter().get_style_defs('.highlight')
    return (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(name)} - parkml</title>'
            f'<link rel="alternate" type="text/markdown" href="{name}.html.md">'
            f'<style>{style}</style></head>\n<body><nav>{nav}</nav><main>{body}</main></body></html>\n')


def readme(root: Path) -> str:
    "README.md: the front page's Markdown, its links made absolute (they point at the docs site)"
    pages = notebooks(root)
    index = root / 'nbs/index.ipynb'
    md = page_markdown(index, 'index', {nb.stem: p for nb, p in pages}, symbols(pages), base=f'{DOC_HOST}/')
    return md


def build(root: Path, out: Path = None) -> Path:
    "Write every page (HTML and Markdown) into `out` (default `_docs`), return it"
    root = Path(root)
    out = Path(out or root / '_docs')
    pages = notebooks(root)
    names, syms = {nb.stem: p for nb, p in pages}, symbols(pages)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if (root / 'nbs/llms.txt').exists():   # nbdev-export's index of the modules, published beside the pages
        shutil.copy(root / 'nbs/llms.txt', out / 'llms.txt')
    for nb, page in pages:
        md = page_markdown(nb, page, names, syms)
        (out / f'{page}.html.md').write_text(md)
        (out / f'{page}.html').write_text(page_html(md, sidebar(pages, page), page))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--root', default=str(Path(__file__).resolve().parent.parent), help='checkout to build')
    p.add_argument('--out', default=None, help='folder of the site (default: ROOT/_docs)')
    p.add_argument('--readme-only', action='store_true', help='write README.md only')
    p.add_argument('--no-readme', action='store_true', help='leave README.md as it is')
    a = p.parse_args(argv)
    root = Path(a.root)
    sys.path.insert(0, str(root))
    if not a.no_readme:
        (root / 'README.md').write_text(readme(root))
    if not a.readme_only:
        out = build(root, a.out)
        print(f'{len(list(out.glob("*.html")))} pages in {out}')


if __name__ == '__main__':
    sys.exit(main())
