"""What every page of the governance app shares: sign-in, the signed-in actor, and cached queries of MLflow and the
stores. Thin on purpose: every fact comes from a parkml library function and every action calls the same library
function as the command line (parkml.governance, the alert store)."""
from __future__ import annotations
import pandas as pd
import streamlit as st
from parkml.config import get_settings

def cfg(): return get_settings()

TTL = float(get_settings().app_cache_ttl_s)  # seconds cached queries are kept (setting app_cache_ttl_s)

# ---------- sign-in ----------
def sign_in():
    """Show the sign-in form until a person of the users file proves who they are; return their governance Actor.
    The proof is `parkml.users.authenticate` (bcrypt password, lock-out after repeated failures), never the server's
    own PARKML_USER / PARKML_PASSWORD / PARKML_TOKEN."""
    from parkml.users import load_users, users_path, authenticate, AuthError, UserError
    if 'actor' not in st.session_state:
        try: d = load_users()
        except UserError as e:
            st.error(str(e))
            st.stop()
        if not d['credentials']['usernames']:
            st.error(f"No users yet in {users_path()}: make the first owner with `parkml users add NAME --role owner`.")
            st.stop()
        box = st.empty()   # the form, cleared once the person is signed in (no second run of the page)
        with box.container():
            st.title('parkml governance')
            st.caption('Sign in with your name and password from the users file.')
            with st.form('parkml-sign-in'):
                name = st.text_input('Name', key='sign-in-name')
                pw = st.text_input('Password', type='password', key='sign-in-password')
                sent = st.form_submit_button('Sign in')
        if not sent: st.stop()
        try: who = authenticate(name.strip(), pw, cfg=cfg(), prompt=False, env=False)
        except (AuthError, UserError) as e:
            st.session_state['authentication_status'] = False
            st.error(f"Sign-in refused: {e}")
            st.stop()
        box.empty()
        st.session_state.update(actor=who, authentication_status=True)
    me = st.session_state['actor']
    with st.sidebar:
        st.markdown(f"Signed in as **{me.name}** ({me.role})")
        if st.button('Sign out', key='parkml-sign-out'):
            for k in ('actor', 'authentication_status'): st.session_state.pop(k, None)
            st.rerun()
    return me

def actor():
    "The signed-in person as a governance Actor"
    return st.session_state['actor']

# ---------- cached queries ----------
@st.cache_data(ttl=TTL, show_spinner=False)
def versions() -> pd.DataFrame:
    "Every registered version with its validation status, approval and aliases"
    from parkml.appviews import versions_table
    return versions_table(cfg())

@st.cache_data(ttl=TTL, show_spinner=False)
def alias_moves() -> pd.DataFrame:
    from parkml.governance import alias_history
    return alias_history(cfg=cfg())

def aliases_since() -> pd.DataFrame:
    "champion, challenger and previous: which version and since when"
    from parkml.appviews import aliases_since as since
    return since(alias_moves(), versions())

@st.cache_data(ttl=TTL, show_spinner='reading MLflow...')
def version_facts(version: str) -> dict:
    "Everything about one version (the audit report's facts): lineage, staging, plots, approval, production"
    from parkml.audit import collect_audit
    return collect_audit(version, cfg())

@st.cache_data(ttl=TTL, show_spinner=False)
def alerts(state=None, severity=None) -> pd.DataFrame:
    from parkml.alerts import open_alert_store
    with open_alert_store(cfg().alerts_uri) as s: return s.table(state=state or None, severity=severity or None)

@st.cache_data(ttl=TTL, show_spinner=False)
def alert_actions() -> pd.DataFrame:
    from parkml.alerts import open_alert_store
    with open_alert_store(cfg().alerts_uri) as s: return s.actions()

@st.cache_data(ttl=TTL, show_spinner=False)
def daily() -> pd.DataFrame:
    from parkml.appviews import recent_daily_runs
    return recent_daily_runs(cfg())

@st.cache_data(ttl=TTL, show_spinner=False)
def today() -> dict:
    "Today's traffic, labelled accuracy (with interval) and the newest label-free estimate"
    from parkml.appviews import today_metrics
    return today_metrics(cfg(), daily())

@st.cache_data(ttl=10, show_spinner=False)
def service_health() -> dict:
    "The configured edge service's /health answer (or why it cannot be reached)"
    import httpx
    c = cfg()
    url = f"http://{c.host}:{c.port}/health"
    try:
        r = httpx.get(url, timeout=0.5)
        return dict(url=url, ok=r.is_success, status=r.status_code, body=r.json() if r.is_success else r.text[:200])
    except Exception as e: return dict(url=url, ok=False, status=None, body=f"{type(e).__name__}: {e}"[:200])

def refresh():
    "Forget every cached query (after an action changed something)"
    st.cache_data.clear()

def show_png(name: str, data: bytes): st.image(data, caption=name)
