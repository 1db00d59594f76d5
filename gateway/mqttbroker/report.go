package mqttbroker

import (
	"strings"

	"github.com/edgegw/edgegw/gateway/status"
)

// Report fills in the broker's part of its source status: up once
// listening, what it refused, its clients, limits and sessions file.
func (b *Broker) Report(st *status.SourceStatus) {
	m := b.Stats()
	st.Up = m.Listening
	var addrs []string
	for _, l := range []struct{ scheme, addr string }{{"mqtt", b.o.Listen}, {"mqtts", b.o.TLSListen}, {"ws", b.o.WebSocket}} {
		if l.addr != "" {
			addrs = append(addrs, l.scheme+"://"+l.addr)
		}
	}
	st.Address = strings.Join(addrs, " ")
	st.TooLarge, st.Unmappable, st.Clients = m.TooLarge, m.Unmappable, &m.Clients
	st.Pending, st.Refused, st.RetainedKept, st.RetainedBytes, st.SessionsBytes = &m.Pending, m.RefusedConnections, &m.Retained, &m.RetainedBytes, &m.SessionsBytes
	st.SessionsWritten, st.SessionsCommits = &m.SessionsWritten, &m.SessionsCommits
	if !m.Listening {
		st.LastError = "not listening yet"
	}
}
