"Fleet: every edge box of the chain as the centre last heard from it; a silent box marked first, its alerts counted."
import streamlit as st
import appkit as k
from parkml.appviews import fleet_now
from parkml.alerts import open_alert_store
from parkml.fleet import fleet_figure, silences_ended

st.title('Fleet')
k.actor()   # any signed-in person may look; acting on an alert is on the Alerts page, with its role check


@st.cache_data(ttl=k.TTL, show_spinner=False)
def facts() -> dict: return fleet_now(k.cfg())


@st.cache_data(ttl=k.TTL, show_spinner=False)
def ended():
    "The silences that ended: the box heard from again (resolved by the fleet check) or a person's resolution"
    with open_alert_store(k.cfg().alerts_uri) as al: return silences_ended(al)


f = facts()
if not f['boxes']:
    st.info('No box has reported to the centre yet: each box sends its state with `parkml ship` '
            '(this page reads box_status of the prediction store named by predlog_uri).')
    st.stop()
c1, c2, c3 = st.columns(3)
c1.metric('boxes', f['boxes'])
c2.metric('silent boxes', f['n_silent'], help=f"no report for more than {k.cfg().box_silent_after_s:g} s "
                                                "(setting box_silent_after_s)")
c3.metric('open alerts on boxes', f['open_alerts'])
for line in f['silent']: st.error(line, icon=':material/wifi_off:')
for line in f['refusing']: st.warning(line, icon=':material/gpp_bad:')
t = f['table']


def mark(row):
    "Silent boxes in red, refusing ones and clocks off in amber"
    amber = 'background-color: #fbe7c0'
    colour = {'SILENT': 'background-color: #f8d0d0', 'refuses release': amber, 'clock off': amber}.get(row.state, '')
    return [colour] * len(row)


st.dataframe(t.style.apply(mark, axis=1).format(precision=1), hide_index=True)
st.pyplot(fleet_figure(t, k.cfg()))
back = ended()
if len(back):
    st.subheader('Heard from again')
    st.caption('silences that ended: the fleet check resolves the alert itself when the box reports again')
    st.dataframe(back, hide_index=True)
