"""parkml governance app: `parkml app` runs `streamlit run app/Home.py`. Sign in, then the pages."""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import streamlit as st
import appkit

st.set_page_config(page_title='parkml governance', page_icon=':material/pets:', layout='wide')
appkit.sign_in()
here = Path(__file__).resolve().parent
nav = st.navigation([st.Page(here/'pages'/'overview.py', title='Overview', icon=':material/dashboard:', default=True),
                     st.Page(here/'pages'/'models.py', title='Models', icon=':material/model_training:'),
                     st.Page(here/'pages'/'decide.py', title='Decide', icon=':material/gavel:'),
                     st.Page(here/'pages'/'monitoring.py', title='Monitoring', icon=':material/monitoring:'),
                     st.Page(here/'pages'/'live.py', title='Live', icon=':material/videocam:'),
                     st.Page(here/'pages'/'fleet.py', title='Fleet', icon=':material/lan:'),
                     st.Page(here/'pages'/'alerts.py', title='Alerts', icon=':material/notifications:'),
                     st.Page(here/'pages'/'label.py', title='Label', icon=':material/label:'),
                     st.Page(here/'pages'/'audit.py', title='Audit', icon=':material/fact_check:')])
nav.run()
