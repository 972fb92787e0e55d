"""Alert store (each test on a SQLite file and on a real PostgreSQL database), channels (a real webhook receiver and
a real SMTP server on loopback), retries and the outbox."""
import time
import pytest
from receivers import Receiver, Mailbox, free_port, receiver, mailbox  # noqa: F401 (fixtures)
from pg_fixture import pg_server, pg_db, store_uri, sql  # noqa: F401 (fixtures)
from parkml.alerts import (Alert, open_alert_store, raise_alerts, deliver_pending, WebhookChannel, EmailChannel,
                           channels_from_settings, SEVERITIES)


@pytest.fixture
def store(store_uri, monkeypatch):
    monkeypatch.setenv('PARKML_ALERTS_URI', store_uri)
    monkeypatch.setenv('PARKML_ALERT_BACKOFF_S', '0.02')
    monkeypatch.setenv('PARKML_ALERT_TIMEOUT_S', '2.0')
    with open_alert_store() as s: yield s


def make_alert(rule='prediction_drift', severity='warning', day='2025-06-01', **kw):
    return Alert(rule, severity, kw.pop('message', 'The share of dogs rose from 48% to 71%.'), kw.pop('action', 'retrain'),
                 kw.pop('evidence', dict(dog_share=0.71, reference_dog_share=0.48, run_link='http://mlflow/#/runs/abc')),
                 day=day, model_version='4', camera='cam-01', **kw)


def test_webhook_and_email_receive_the_alert(store, receiver, mailbox, monkeypatch):
    monkeypatch.setenv('PARKML_ALERT_WEBHOOK_URL', receiver.url)
    monkeypatch.setenv('PARKML_SMTP_HOST', '127.0.0.1')
    monkeypatch.setenv('PARKML_SMTP_PORT', str(mailbox.port))
    monkeypatch.setenv('PARKML_SMTP_TO', 'keeper@park.test, vet@park.test')
    chans = channels_from_settings()
    assert set(chans) == {'webhook', 'email'}
    a = make_alert()
    new = raise_alerts([a], store, chans)
    assert [x.id for x in new] == [a.id]
    assert len(receiver.got) == 1 and receiver.got[0]['id'] == a.id and receiver.got[0]['evidence']['dog_share'] == 0.71
    assert receiver.got[0]['action'] == 'retrain' and 'MLflow run: http://mlflow/#/runs/abc' in receiver.got[0]['text']
    (sender, rcpts, msg), = mailbox.msgs
    assert rcpts == ['keeper@park.test', 'vet@park.test'] and 'prediction_drift' in msg['Subject']
    body = msg.get_payload(decode=True).decode()
    assert 'The share of dogs rose from 48% to 71%.' in body and 'dog_share: 0.71' in body and 'Suggested action: retrain' in body
    ob = store.outbox(a.id)
    assert set(ob.channel) == {'webhook', 'email'} and ob.delivered.notna().all() and (ob.attempts == 1).all()


def test_retry_then_success_counts_attempts(store, monkeypatch):
    r = Receiver(fail=2)
    try:
        a = make_alert()
        raise_alerts([a], store, {'webhook': WebhookChannel(r.url, 2.0)})
        ob = store.outbox(a.id)
        assert ob.attempts[0] == 3 and ob.delivered.notna()[0] and r.requests == 3 and len(r.got) == 1
    finally: r.stop()


def test_receiver_down_alert_kept_and_delivered_later(store, monkeypatch):
    port = free_port()  # nothing listens here yet
    monkeypatch.setenv('PARKML_ALERT_RETRIES', '2')
    chans = {'webhook': WebhookChannel(f"http://127.0.0.1:{port}/hook", 1.0)}
    a = make_alert(rule='telemetry_trend', action='check the host', message='Memory grew by 30% over the day.')
    t0 = time.time()
    raise_alerts([a], store, chans)
    assert time.time() - t0 < 5
    assert store.get(a.id).message == 'Memory grew by 30% over the day.'  # stored although nothing was delivered
    pend = store.outbox(pending=True)
    assert list(pend.alert_id) == [a.id] and pend.attempts[0] == 2 and 'ConnectError' in pend.last_error[0]
    # still down: another round adds attempts, keeps it queued
    out = deliver_pending(store, chans)
    assert not out.delivered.any() and store.outbox(a.id).attempts[0] == 4
    r = Receiver(port=port)
    try:
        out = deliver_pending(store, chans)
        assert out.delivered.all() and [g['id'] for g in r.got] == [a.id]
        assert store.outbox(pending=True).empty and store.outbox(a.id).attempts[0] == 5
        assert deliver_pending(store, chans).empty  # nothing left to send, nothing sent twice
        assert len(r.got) == 1
    finally: r.stop()


def test_smtp_down_then_up(store, monkeypatch):
    port = free_port()
    chans = {'email': EmailChannel('127.0.0.1', port, 'parkml@park.test', 'keeper@park.test', 1.0)}
    a = make_alert(rule='cat_recall_gap', message='The model favours dogs over cats by 12 points.')
    raise_alerts([a], store, chans)
    assert store.outbox(a.id, pending=True).attempts[0] == 3
    from aiosmtpd.controller import Controller
    got = []
    class H:
        async def handle_DATA(self, server, session, envelope): got.append(envelope.content); return '250 OK'
    ctl = Controller(H(), hostname='127.0.0.1', port=port); ctl.start()
    try:
        assert deliver_pending(store, chans).delivered.all()
        assert b'favours dogs over cats by 12 points' in got[0]
    finally: ctl.stop()


def test_severity_below_send_level_is_stored_not_sent(store, receiver):
    a = make_alert(severity='info', rule='traffic_note', action='watch')
    raise_alerts([a], store, {'webhook': WebhookChannel(receiver.url)})
    assert store.get(a.id).severity == 'info' and store.outbox(a.id).empty and receiver.got == []


def test_states_queries_and_dedupe(store):
    a, b = make_alert(), make_alert(rule='integrity_blank', severity='critical', action='check the camera', message='Blank frames.')
    assert len(store.add([a, b])) == 2
    again = make_alert()
    assert store.add([again]) == [] and again.id == a.id  # a re-run of the day does not raise it twice
    c = make_alert(day='2025-06-02')
    store.add([c])
    assert {x.id for x in store.query(day='2025-06-01')} == {a.id, b.id}
    assert [x.id for x in store.query(severity='critical')] == [b.id]
    assert [x.id for x in store.query(rule='prediction_drift', day=['2025-06-02'])] == [c.id]
    assert len(store.query(state='open')) == 3
    store.acknowledge(a.id, 'ana', 'on it')
    got = store.get(a.id)
    assert (got.state, got.state_by, got.state_note) == ('acknowledged', 'ana', 'on it') and got.state_at > 0
    with pytest.raises(ValueError, match='can become'): store.acknowledge(a.id, 'bo')
    store.resolve(a.id, 'bo', 'retrained, version 5')
    assert [x.id for x in store.query(state='resolved')] == [a.id]
    assert list(store.history(a.id).who) == ['parkml', 'ana', 'bo']
    with pytest.raises(KeyError): store.get('a-missing')
    with pytest.raises(ValueError): store.set_state(b.id, 'closed')
    act = store.add_action(b.id, 'retrain', 'ana', 'running', note='manual')
    store.update_action(act, status='done', version='5', ref='run123')
    row = store.actions(b.id).iloc[0]
    assert (row.kind, row.status, row.version, row.ref, row.actor) == ('retrain', 'done', '5', 'run123', 'ana')
    assert {'id', 'severity', 'rule', 'state'} <= set(store.table().columns) and SEVERITIES[-1] == 'critical'


def test_alert_validation_and_uri(tmp_path):
    with pytest.raises(ValueError): Alert('r', 'urgent', 'm', 'retrain')
    with pytest.raises(ValueError): Alert('r', 'warning', 'm', 'reboot')
    with pytest.raises(NotImplementedError, match='sqlite://, postgresql://'): open_alert_store('postgres://db/alerts')
    with pytest.raises(ValueError): open_alert_store('sqlite://:memory:')


def test_store_made_before_versions_opens_with_every_row(tmp_path):
    "An alert store written by parkml before schema versions (tests/data/v0, made by the code of 8ec4ebb) migrates in place"
    import shutil
    from conftest import ROOT
    from parkml.stores import StoreTooNew
    uri = f"sqlite:///{shutil.copy(ROOT/'tests'/'data'/'v0'/'alerts.db', tmp_path/'alerts.db')}"
    tables = ('alerts', 'alert_history', 'alert_actions', 'alert_outbox')
    before = {t: sql(uri, f'SELECT * FROM {t} ORDER BY 1, 2') for t in tables}
    assert sql(uri, 'PRAGMA user_version') == [(0,)] and all(before.values())
    with open_alert_store(uri) as st:
        assert st.db.schema_version() == 1 and {a.rule for a in st.query()} == {'drift', 'recall_drop_cat'}
        assert st.outbox(pending=True).channel.tolist() == ['email'] and st.actions().version.tolist() == ['3']
    assert {t: sql(uri, f'SELECT * FROM {t} ORDER BY 1, 2') for t in tables} == before
    sql(uri, 'PRAGMA user_version = 3')
    with pytest.raises(StoreTooNew, match='alert store .* schema version 3, newer than'): open_alert_store(uri)
