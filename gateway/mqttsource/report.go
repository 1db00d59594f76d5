package mqttsource

import (
	"github.com/edgegw/edgegw/gateway/secret"
	"github.com/edgegw/edgegw/gateway/status"
)

// Report fills in the source's part of its status: up once connected and
// subscribed, what it refused, and why it is not up.
func (s *Source) Report(st *status.SourceStatus) {
	m := s.Stats()
	st.Up = m.Connected && m.Subscribed
	st.Address = secret.URL(s.o.Broker)
	st.TooLarge, st.Unmappable, st.Retained = m.TooLarge, m.Unmappable, m.Retained
	if !m.Connected {
		st.LastError = "not connected to the broker"
	} else if !m.Subscribed {
		st.LastError = "connected, waiting for the broker to grant the subscriptions"
	}
}
