"`parkml audit` on a really trained version: every section of the report checked against MLflow and the stores."
import json, re
import pandas as pd
import pytest
from conftest import run_cli
from park_fixture import make_park, STAGING_SUMMARY

@pytest.fixture
def park(trained, tmp_path, monkeypatch): return make_park(trained, tmp_path, monkeypatch)

def section(md: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", md, re.S | re.M)
    assert m, f"no section {title}"
    return m.group(1)

def test_audit_report_sections_match_mlflow(park, tmp_path):
    from parkml.audit import SECTIONS
    from parkml.governance import audit_records, alias_history
    client, name, src = park['client'], park['name'], park['src']
    r = run_cli('audit', '1', '--out', tmp_path/'report', env=park['env'])
    assert r.returncode == 0, r.stderr
    md, page = (tmp_path/'report'/'audit-v1.md').read_text(), (tmp_path/'report'/'audit-v1.html').read_text()
    assert [h[3:] for h in re.findall(r'^## .*$', md, re.M)] == list(SECTIONS)
    ver = section(md, 'Audit log verification')  # first: the approval and release below are read from that log
    assert 'OK: 2 records, chain intact, 0 signatures valid' in ver and '**records in the chain**: 2' in ver
    run, mv = client.get_run(src.run_id), client.get_model_version(name, '1')
    # model card: intended use, data version, metrics with intervals, fairness, robustness, limits, training plots
    card = section(md, 'Model card')
    assert 'CCTV camera' in card and run.data.tags['parkml.data_version'] in card
    assert f"**test accuracy (logged)**: {run.data.metrics['test_accuracy']:.4g}" in card
    assert re.search(r'\| accuracy \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|', card) and 'Fairness by group' in card and 'lighting' in card
    assert 'Robustness' in card and 'Known limits' in card
    for f in (a.path.split('/')[-1] for a in client.list_artifacts(src.run_id, 'plots')):
        assert f"training-{f}" in card and (tmp_path/'report'/'plots'/f"training-{f}").is_file()
    # lineage: commit, dirty flag, every parameter, package versions
    lin = section(md, 'Lineage')
    assert run.data.tags['parkml.code_commit'] in lin and f"**dirty tree**: {run.data.tags['parkml.code_dirty']}" in lin
    for k, v in run.data.params.items(): assert f"| {k} | {v} |" in lin.replace('\\|', '|') or k == 'data_root', k
    pk = json.loads(open(client.download_artifacts(src.run_id, 'environment/packages.json', str(tmp_path))).read())
    assert f"| mlflow | {pk['mlflow']} |" in lin
    # staging verdict: every gate from the staging run's summary
    stg = section(md, 'Staging verdict')
    summary = json.loads(open(client.download_artifacts(park['staging']['1'], STAGING_SUMMARY, str(tmp_path))).read())
    assert park['staging']['1'] in stg and '**verdict**: passed' in stg
    assert summary['recall_gap_sentence'] in stg and '| class | cat | 0.92 | 60 |' in stg
    assert '| fog | 3 | 0.88 | 5 |' in card  # robustness from the staging run, in the model card
    for g in summary['gates']: assert f"| {g['name']} | {g['value']:.4g} | {g['threshold']:.4g} | {g['op']} | True |" in stg
    # approval record: tags and the audit store
    ap = section(md, 'Approval record')
    assert f"**by**: {mv.tags['approved_by']}" in ap and mv.tags['approval_note'] in ap and mv.tags['approval_time'] in ap
    assert str(audit_records(version='1', action='approve').iloc[0].id) in ap
    # alias history: every move of version 1
    ah = section(md, 'Alias history')
    assert '| champion | - | 1 | release | olu | owner |' in ah and 'first model to production' in ah
    assert len(alias_history()) == 1
    # production since release: traffic, labels, alerts and actions
    prod = section(md, 'Production since release')
    assert f"**answered predictions**: {len(park['ids'])}" in prod and '**labelled predictions**: 40' in prod
    assert re.search(r'\| accuracy \| 0\.9 \|', prod)  # 36 of 40 labels agree
    for a in park['alerts']: assert a.id in prod
    assert 'labels say accuracy dropped' in prod
    # links to every run involved, and the report logged beside the version
    runs = section(md, 'MLflow runs')
    audit_run = mlflow_tag = client.get_model_version(name, '1').tags['audit_run_id']
    for rid in (src.run_id, park['staging']['1'], audit_run): assert rid in runs
    assert {a.path for a in client.list_artifacts(audit_run, 'audit')} >= {'audit/audit-v1.html', 'audit/audit-v1.md', 'audit/plots'}
    assert client.get_run(audit_run).data.tags['parkml.kind'] == 'audit'
    assert page.count('data:image/png;base64,') >= 3 and 'Traceback' not in page

def test_audit_of_an_unstaged_unreleased_version_says_so(park, tmp_path):
    from parkml.audit import audit_report
    r = audit_report(3, tmp_path/'r3', log=False)
    md = r['markdown'].read_text()
    assert 'not staged' in section(md, 'Staging verdict') and 'never released' in section(md, 'Production since release')
    assert 'never moved an alias' in section(md, 'Alias history') and r['run_id'] is None
    bad = run_cli('audit', '99', env=park['env'])
    assert bad.returncode == 2 and 'no version or alias' in bad.stderr

def test_audit_report_shows_a_tampered_log(park, tmp_path):
    import sqlite3
    from contextlib import closing
    from parkml.audit import audit_report
    from parkml.config import get_settings, sqlite_file
    db = sqlite_file(get_settings().governance_uri, 'audit store')
    with closing(sqlite3.connect(db)) as con:
        con.execute('DROP TRIGGER audit_no_update')
        con.execute("UPDATE audit SET actor = 'mallory' WHERE action = 'approve'")
        con.commit()
    md = audit_report(1, tmp_path/'r1', log=False)['markdown'].read_text()
    ver = section(md, 'Audit log verification')
    assert 'TAMPERED: record 1 was edited: its hash does not match its content' in ver
    assert '| record 1 was edited' in ver  # and in the table of every problem
    assert re.search(r'^## Audit log verification', md, re.M).start() < md.index('## Model card')
