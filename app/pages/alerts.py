"Alerts: filter, acknowledge, resolve, and act (retrain, roll back) with the link alert -> action -> version recorded."
import pandas as pd
import streamlit as st
import appkit as k
from parkml.alerts import open_alert_store, handle_alert, SEVERITIES, STATES
from parkml.retraining import start_retrain_job
from parkml.governance import check_role, rollback, Refused

st.title('Alerts')
me = k.actor()
c1, c2 = st.columns(2)
state = c1.multiselect('State', STATES, default=['open', 'acknowledged'], key='alerts-state')
sev = c2.multiselect('Severity', SEVERITIES, default=list(SEVERITIES), key='alerts-severity')
a = k.alerts(tuple(state) or None, tuple(sev) or None)
st.dataframe(a.assign(created=lambda d: pd.to_datetime(d.created, unit='s', utc=True)), hide_index=True)
acts = k.alert_actions()
if len(acts): st.markdown('**Actions taken**'); st.dataframe(acts, hide_index=True)
if not len(a): st.stop()
aid = st.selectbox('Alert', a.id.tolist(), format_func=lambda i: f"{i}  {a.set_index('id').loc[i, 'rule']}  ({a.set_index('id').loc[i, 'state']})", key='alerts-id')
row = a.set_index('id').loc[aid]
st.info(f"[{row.severity}] {row.rule}: {row.message}  - suggested action: {row.action}")
try: check_role(me, 'alert_handled'); allowed = True
except PermissionError as e: st.caption(str(e)); allowed = False
if allowed:
    note = st.text_input('Note', key='alerts-note')
    b1, b2, b3, b4 = st.columns(4)
    def done(msg): k.refresh(); st.success(msg)
    try:
        with open_alert_store(k.cfg().alerts_uri) as s:
            if b1.button('Acknowledge', key='alerts-ack'):
                handle_alert(aid, 'acknowledged', me, note or None, k.cfg())
                done(f"alert {aid} acknowledged by {me.name}")
            if b2.button('Resolve', key='alerts-resolve'):
                handle_alert(aid, 'resolved', me, note or None, k.cfg())
                done(f"alert {aid} resolved by {me.name}")
            if b3.button('Retrain now', key='alerts-retrain'):
                job = start_retrain_job(note or f"alert {aid}: {row.message}", aid, me, cfg=k.cfg())
                done(f"retraining started for alert {aid} as process {job['pid']}: it records its request in the audit log "
                     f"and its progress under Actions taken, then stages the new version; log {job['log']}")
            if b4.button('Roll back', key='alerts-rollback'):
                recs = rollback(me, note or f"alert {aid}: {row.message}", cfg=k.cfg())
                to = next((r['to_version'] for r in recs if r['alias'] == 'champion'), None)
                act = s.add_action(aid, 'roll back', me.name, 'done', ref=f"audit:{recs[0]['id']}", note=note or None)
                s.update_action(act, version=to)
                done(f"rolled back: champion -> version {to} (action {act})")
    except (Refused, PermissionError, ValueError, KeyError) as e: st.error(f"refused: {e}")
