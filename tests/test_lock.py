"requirements.lock pins all that pyproject.toml asks for, with sha256s; `bin/lock --check` (run by bin/setup) says when not."
import re, subprocess, sys, tomllib
import pytest
from packaging.requirements import Requirement
from conftest import ROOT

LOCK, PYPROJECT = ROOT/'requirements.lock', ROOT/'pyproject.toml'
PIN = re.compile(r'^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?: --hash=sha256:[0-9a-f]{64})+)$')

def norm(name): return re.sub(r'[-_.]+', '-', name).lower()

def pins(text) -> dict:
    "{name: version} of the lock's lines; fails on a line that is not pinned with a hash"
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith('#'):
            m = PIN.match(line)
            assert m, f"lock line without an exact version and a sha256: {line!r}"
            out[norm(m[1])] = m[2]
    return out

def check(*args):
    "Run `bin/lock --check` with this interpreter (the lock is made for .venv's)"
    return subprocess.run([sys.executable, str(ROOT/'bin'/'lock'), '--check', *map(str, args)],
                          capture_output=True, text=True, timeout=60)

def test_lock_pins_every_dependency_with_a_hash():
    proj = tomllib.loads(PYPROJECT.read_text())
    reqs = proj['project']['dependencies'] + [r for g in proj['project']['optional-dependencies'].values() for r in g]
    locked = pins(LOCK.read_text())
    assert len(locked) > len(reqs)  # their dependencies too
    for r in map(Requirement, reqs + proj['build-system']['requires'] + ['pip']):
        assert norm(r.name) in locked, f"{r} is in pyproject.toml but not in requirements.lock: run bin/lock"
        version = locked[norm(r.name)]
        assert r.specifier.contains(version, prereleases=True), f"{r}: the lock pins {version}"
    assert locked['torch'] == '2.13.0+cpu'  # the CPU build, not a CUDA one

def test_check_accepts_the_committed_lock():
    r = check()
    assert r.returncode == 0, r.stderr

def test_check_names_a_dependency_added_without_relocking(tmp_path):
    text = PYPROJECT.read_text()
    added = text.replace('dependencies = [\n', 'dependencies = [\n    "left-pad>=1.0",\n', 1)
    assert added != text
    (tmp_path/'pyproject.toml').write_text(added)
    r = check('--pyproject', tmp_path/'pyproject.toml')
    assert r.returncode == 1
    assert 'requirements.lock does not match pyproject.toml; run bin/lock' in r.stderr
    assert 'pyproject.toml asks for left-pad>=1.0, not in the lock' in r.stderr
    assert 'left-pad>=1.0 is not pinned by the lock' in r.stderr

def test_check_names_a_line_without_hash_and_a_pin_out_of_range(tmp_path):
    text = LOCK.read_text()
    torch = next(l for l in text.splitlines() if l.startswith('torch=='))
    numpy = next(l for l in text.splitlines() if l.startswith('numpy=='))
    lock = tmp_path/'requirements.lock'
    lock.write_text(text.replace(torch, torch.split(' ')[0]).replace(numpy, 'numpy==1.26.4 --hash=sha256:' + '0'*64))
    r = check('--lock', lock)
    assert r.returncode == 1
    assert 'is not `name==version --hash=sha256:<64 hex>`: torch==2.13.0+cpu' in r.stderr
    assert 'numpy>=2 is not pinned by the lock (it pins numpy==1.26.4)' in r.stderr
    with pytest.raises(AssertionError, match='without an exact version and a sha256'): pins(torch.split(' ')[0])

def test_check_says_when_the_lock_is_missing(tmp_path):
    r = check('--lock', tmp_path/'requirements.lock')
    assert r.returncode == 1 and 'requirements.lock is missing' in r.stderr
