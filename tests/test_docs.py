"The docs site and README built from the notebooks (tools/docs.py): every internal link lands, every `Docs:` page exists"
import re, subprocess, sys
from html.parser import HTMLParser
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'tools'))
import docs  # noqa: E402


class Links(HTMLParser):
    "The hrefs and element ids of one HTML page"
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('id'):
            self.ids.add(a['id'])
        if tag in ('a', 'link') and a.get('href'):
            self.links.append(a['href'])


def parse(page: Path) -> Links:
    p = Links()
    p.feed(page.read_text())
    return p


def broken_links(site: Path) -> list:
    "Internal links of every page whose file or anchor is missing, as `page -> link`"
    pages = {p.name: parse(p) for p in site.glob('*.html')}
    bad = []
    for name, p in pages.items():
        for link in p.links:
            if re.match(r'^[a-z]+:', link):
                continue
            target, _, anchor = link.partition('#')
            target = target or name
            if not (site / target).exists() or (anchor and target in pages and anchor not in pages[target].ids):
                bad.append(f'{name} -> {link}')
    return bad


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    return docs.build(ROOT, tmp_path_factory.mktemp('site') / '_docs')


def test_every_internal_link_lands(site):
    assert len(list(site.glob('*.html'))) > 30
    assert broken_links(site) == []


def test_docs_lines_of_the_modules_point_at_pages(site):
    urls = [m.group(1) for f in sorted((ROOT / 'parkml').glob('*.py'))
            if (m := re.search(r'^Docs: (\S+?\.html\.md)', f.read_text(), re.M))]
    assert len(urls) > 30
    missing = [u for u in urls if not (site / u.removeprefix(docs.DOC_HOST + '/')).exists()
               or not (site / u.removeprefix(docs.DOC_HOST + '/').removesuffix('.md')).exists()]
    assert missing == []


def test_link_check_finds_a_broken_link(site, tmp_path):
    "The check above can fail: a page with a dead link and a dead anchor is caught"
    (tmp_path / 'a.html').write_text('<a href="b.html">x</a><a href="index.html#nowhere">y</a><a href="#top">z</a>'
                                     '<h1 id="top">t</h1><a href="https://example.org/x.html">w</a>')
    (tmp_path / 'index.html').write_text('<h1 id="here">i</h1>')
    assert broken_links(tmp_path) == ['a.html -> b.html', 'a.html -> index.html#nowhere']


def test_generated_references_are_in_the_pages(site):
    "Exported functions are documented with their docments; the front page is there"
    staging = (site / 'staging_inputs.html').read_text()
    assert 'id="stratified_sample"' in staging
    assert (site / 'index.html').exists() and (site / 'index.html.md').exists()


def test_readme_is_the_front_page():
    "README.md is what tools/docs.py makes of nbs/index.ipynb (bin/test checks the same), and stays small"
    assert (ROOT / 'README.md').read_text() == docs.readme(ROOT)
    assert len((ROOT / 'README.md').read_bytes()) <= 12_000


def test_bin_docs_builds(tmp_path):
    "The one command builds the site (here into a copy's output folder given on the command line)"
    r = subprocess.run([str(ROOT / 'bin/docs'), '--no-readme', '--out', str(tmp_path / 'site')],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / 'site/index.html').exists()


def test_a_parameter_described_by_its_type_shows_its_description():
    "A condition's `severity: Severity` is described once, in `Severity = Annotated[float, '...']`: its page says so"
    md = docs.page_markdown(ROOT / 'nbs/02_cctv.ipynb', 'cctv', {}, {})
    fog = md[md.index('id="fog"'):md.index('<details>', md.index('id="fog"'))]
    assert '| `rng` | Rng |  | the random generator |' in fog, fog
    assert '0 (unchanged), 1-3 (the standard levels) or in between' in fog
