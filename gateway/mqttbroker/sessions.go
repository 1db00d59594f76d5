package mqttbroker

import (
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
)

// sessionStore is mochi's bbolt session store without its $SYS figures:
// mochi stores them at every $SYS tick, a commit with two fsyncs each
// time, which was most of what the broker wrote to an SD card (and a
// first start logged their missing key as an ERROR). They are counters
// of this run; nothing needs them after a restart.
//
// It also counts the commits mochi's store makes (one per client,
// subscription, retained or in-flight message it writes or deletes), for
// the bytes written per reading (Stats.SessionsWritten).
type sessionStore struct {
	*bolt.Hook
	commits *atomic.Uint64
}

// sessionPagesPerCommit is what a commit of the sessions file writes: the
// changed leaf, the root bucket's page and the meta page (its freelist is
// not written: NoFreelistSync). An estimate: mochi's bbolt is its own.
const sessionPagesPerCommit = 3

func (h *sessionStore) Provides(b byte) bool {
	return b != mqtt.OnSysInfoTick && b != mqtt.StoredSysInfo && h.Hook.Provides(b)
}

func (h *sessionStore) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	h.commits.Add(1)
	h.Hook.OnSessionEstablished(cl, pk)
}

func (h *sessionStore) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	h.commits.Add(1)
	h.Hook.OnWillSent(cl, pk)
}

func (h *sessionStore) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if expire && cl.StopCause() != packets.ErrSessionTakenOver {
		h.commits.Add(1)
	}
	h.Hook.OnDisconnect(cl, err, expire)
}

func (h *sessionStore) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	h.commits.Add(uint64(len(pk.Filters)))
	h.Hook.OnSubscribed(cl, pk, reasonCodes)
}

func (h *sessionStore) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	h.commits.Add(uint64(len(pk.Filters)))
	h.Hook.OnUnsubscribed(cl, pk)
}

func (h *sessionStore) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	h.commits.Add(1)
	h.Hook.OnRetainMessage(cl, pk, r)
}

func (h *sessionStore) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	h.commits.Add(1)
	h.Hook.OnQosPublish(cl, pk, sent, resends)
}

func (h *sessionStore) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	h.commits.Add(1)
	h.Hook.OnQosComplete(cl, pk)
}

func (h *sessionStore) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	h.commits.Add(1)
	h.Hook.OnQosDropped(cl, pk)
}

func (h *sessionStore) OnRetainedExpired(filter string) {
	h.commits.Add(1)
	h.Hook.OnRetainedExpired(filter)
}

func (h *sessionStore) OnClientExpired(cl *mqtt.Client) {
	h.commits.Add(1)
	h.Hook.OnClientExpired(cl)
}
