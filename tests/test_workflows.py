"The GitHub Actions workflows: valid for actionlint, and running the commands the project really has."
import re, shlex, shutil, subprocess, sys
from pathlib import Path
import pytest, yaml
from conftest import ROOT

WF = ROOT/'.github'/'workflows'

def actionlint(*files, cwd=ROOT):
    "Run actionlint (from the dev extras) on `files`; shellcheck and pyflakes off so the verdict is the same on every machine"
    exe = Path(sys.executable).parent/'actionlint'
    exe = str(exe) if exe.is_file() else shutil.which('actionlint')
    assert exe, "actionlint is missing: it comes with the dev extras (pip install -e '.[dev]', which bin/setup runs)"
    return subprocess.run([exe, '-no-color', '-shellcheck=', '-pyflakes=', *map(str, files)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)

def load(name: str) -> dict:
    wf = yaml.safe_load((WF/name).read_text())
    if True in wf: wf['on'] = wf.pop(True)  # YAML 1.1 reads the key `on` as true
    return wf

def steps(wf): return [s for j in wf['jobs'].values() for s in j.get('steps', [])]
def uses(wf, action): return [s for s in steps(wf) if s.get('uses', '').startswith(action + '@')]

def parkml_commands(wf) -> list[list[str]]:
    "Arguments of every `parkml` command in the workflow's run steps, shell variables replaced by a sample value"
    out = []
    for s in steps(wf):
        for line in s.get('run', '').splitlines():
            if m := re.search(r'(?:^|\s)(?:\.venv/bin/)?parkml\s+(.*)$', line):
                out.append(shlex.split(re.sub(r'\$\{[^}]*\}|\$\w+', '7', m.group(1))))
    return out

def test_workflows_pass_actionlint():
    files = sorted(WF.glob('*.yml'))
    assert {'tests.yml', 'staging.yml', 'release.yml'} <= {f.name for f in files}
    r = actionlint(*files)
    assert r.returncode == 0, r.stdout + r.stderr

def test_actionlint_catches_broken_workflows(tmp_path):
    (tmp_path/'.github'/'workflows').mkdir(parents=True)
    bad = tmp_path/'.github'/'workflows'/'bad.yml'
    bad.write_text("name: bad\non:\n  pushh:\njobs:\n  a:\n    steps:\n      - run: echo ${{ secret.TOKEN }}\n"
                   "  b:\n    needs: c\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n"
                   "        with:\n          fetch-deepth: 1\n")
    r = actionlint(bad, cwd=tmp_path)
    assert r.returncode == 1
    for why in ('unknown Webhook event "pushh"', '"runs-on" section is missing', 'undefined variable "secret"',
                'needs job "c" which does not exist', 'input "fetch-deepth" is not defined'):
        assert why in r.stdout, why

def test_tests_workflow_runs_the_ci_gate_on_every_push_and_pr():
    wf = load('tests.yml')
    assert {'push', 'pull_request'} <= set(wf['on'])
    job = wf['jobs']['test']
    assert job['runs-on'].startswith('ubuntu') and 'PARKML_DATA' in job['env']
    assert [s['with']['python-version'] for s in uses(wf, 'actions/setup-python')] == ['3.11'] and uses(wf, 'actions/checkout')
    assert [s['run'] for s in steps(wf) if 'run' in s] == ['bash .ci/run'] and (ROOT/'.ci'/'run').is_file()
    # the images come from the reusable data workflow: cache, filled from the PARKML_DATA_URL secret on a miss
    assert wf['jobs']['data']['uses'] == './.github/workflows/petpark-data.yml' and job['needs'] == 'data'
    data = load('petpark-data.yml')
    assert 'workflow_call' in data['on'] and 'PARKML_DATA_URL' in data['on']['workflow_call']['secrets']
    assert uses(data, 'actions/cache') and uses(wf, 'actions/cache/restore')[0]['with']['fail-on-cache-miss'] is True

def test_staging_workflow_trains_stages_and_uploads_the_report():
    wf = load('staging.yml')
    assert 'workflow_dispatch' in wf['on'] and wf['on']['push']['branches'] == ['main']
    runs = [s.get('run', '') for s in steps(wf)]
    assert 'bin/setup' in runs and [c[0] for c in parkml_commands(wf)] == ['train', 'stage']
    assert parkml_commands(wf)[1][1] == 'latest'
    up = uses(wf, 'actions/upload-artifact')[0]
    assert up['if'] == 'always()'
    assert {'runs/notebooks/*.html', 'runs/notebooks/*.ipynb', 'runs/notebooks/*.json'} <= set(up['with']['path'].split())

def test_release_workflow_releases_the_given_version_as_a_person_who_proves_it():
    """No typed identity: the release runs as the owner named by input `user`, proved by their token secret and signed
    with their key secret; secrets reach only the step that needs them, through env, never the command line or echo"""
    wf = load('release.yml')
    assert set(wf['on']) == {'workflow_dispatch'}
    inputs = wf['on']['workflow_dispatch']['inputs']
    assert inputs['version']['required'] and inputs['user']['required'] and 'approver' not in inputs
    job = wf['jobs']['release']
    assert job['env']['PARKML_TRACKING_URI'] == '${{ secrets.PARKML_TRACKING_URI }}'
    assert job['env']['PARKML_GOVERNANCE_URI'] == '${{ secrets.PARKML_GOVERNANCE_URI }}'
    assert not {'PARKML_TOKEN', 'PARKML_SIGNING_KEY', 'PARKML_PASSWORD'} & set(job['env'])   # not in every step
    rel = next(s for s in steps(wf) if 'parkml release' in s.get('run', ''))
    assert rel['env']['VERSION'] == '${{ inputs.version }}' and rel['env']['RELEASER'] == '${{ inputs.user }}'
    assert rel['env']['PARKML_TOKEN'] == '${{ secrets.PARKML_TOKEN }}'
    assert rel['env']['PARKML_SIGNING_KEY'] == '${{ secrets.PARKML_SIGNING_KEY }}'
    assert '"$VERSION" --user "$RELEASER"' in rel['run'] and '${{' not in rel['run']  # inputs reach the shell via env
    text = (WF/'release.yml').read_text()
    assert '--by' not in text and '--role' not in text and 'PARKML_PASSWORD' not in text
    for s in steps(wf):
        run = s.get('run', '')
        assert '${{' not in run, run                                          # nothing expanded into a script
        assert not re.search(r'(echo|printf)[^\n>|]*\$\{?(PARKML_TOKEN|PARKML_SIGNING_KEY)', run), run   # never printed
        if s is not rel: assert not {'PARKML_TOKEN', 'PARKML_SIGNING_KEY'} & set(s.get('env', {})), s
    assert [c[:2] for c in parkml_commands(wf)] == [['release', '7'], ['audit', 'verify']]

@pytest.mark.parametrize('name', ['staging.yml', 'release.yml'])
def test_workflow_commands_parse_with_the_real_cli(name):
    from parkml.cli import build_parser
    ap = build_parser()
    cmds = parkml_commands(load(name))
    assert cmds
    for args in cmds:
        try: ap.parse_args(args)
        except SystemExit: pytest.fail(f"{name}: `parkml {shlex.join(args)}` is not a valid parkml command line")

def test_slow_examples_are_run_by_a_workflow():
    "Cells flagged `#| slow` are left out of the gate (tst_flags) and run by their own workflow with --flags slow"
    import tomllib
    assert tomllib.loads((ROOT/'pyproject.toml').read_text())['tool']['nbdev']['tst_flags'] == 'slow'
    assert any('#| slow' in p.read_text() for p in (ROOT/'nbs').glob('*.ipynb'))
    wf = load('slow-examples.yml')
    assert 'push' in wf['on'] and 'schedule' in wf['on'] and wf['jobs']['slow']['needs'] == 'data'
    runs = [s.get('run', '') for s in steps(wf)]
    assert 'bin/setup' in runs and any(r.split()[:3] == ['.venv/bin/nbdev-test', '--flags', 'slow'] for r in runs), runs
