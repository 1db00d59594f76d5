package mqttbroker

import "github.com/edgegw/edgegw/gateway/status"

// Report fills in the broker's part of its source status: up once
// listening, what it refused, its clients, limits and sessions file.
func (b *Broker) Report(st *status.SourceStatus) {
	m := b.Stats()
	st.Up = m.Listening
	st.TooLarge, st.Unmappable, st.Clients = m.TooLarge, m.Unmappable, &m.Clients
	st.Pending, st.Refused, st.RetainedKept, st.RetainedBytes, st.SessionsBytes = &m.Pending, m.RefusedConnections, &m.Retained, &m.RetainedBytes, &m.SessionsBytes
	st.SessionsWritten, st.SessionsCommits = &m.SessionsWritten, &m.SessionsCommits
	if !m.Listening {
		st.LastError = "not listening yet"
	}
}
