package gateway_test

import (
	"fmt"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegw/edgegw/gateway/mqtttest"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// A device with a persistent session publishes QoS 2 packet id 7 "A",
// gets PUBREC and loses the link before its PUBREL; rebooted, it restarts
// its packet ids and publishes a new message "B" with id 7, DUP=0. mochi
// answered B with a PUBREC (for MQTT 3.1.1 without a reason code: a
// success), then PUBCOMP, and B was never stored. Now a reused id is
// cleared, as mosquitto does ("Reused message ID ... Clearing from
// storage"): B is stored before its PUBREC, and both are in the stream.
// A resend of A itself (DUP=1, same bytes) is still only a copy: in the
// stream once. Raw packets: no client library reuses an id on purpose.
func TestQoS2PacketIDReuseNeverLosesAMessage(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(fmt.Sprintf("MQTT protocol level %d", version), func(t *testing.T) {
			srv := natstest.Start(t, nil)
			cfg, url := serverConfigFor(t, srv.URL(), "    allow_anonymous: true", "")
			// In the order stored: with live_first (the default), what was
			// stored before the uplink's first session is sent after what
			// came later (loaded runs saw B, end, A, C).
			cfg.Upstream.Drain = "oldest_first"
			g := startGateway(t, cfg)
			id := fmt.Sprintf("device-v%d", version)

			dev, _ := mqtttest.DialRaw(t, url, version, id, false)
			dev.Publish(7, 2, false, "sensors/door", "A")
			dev.Expect(packets.Pubrec, 7)
			dev.Publish(8, 2, false, "sensors/door", "C")
			dev.Expect(packets.Pubrec, 8)
			dev.Close() // no PUBREL for 7 or 8

			dev, present := mqtttest.DialRaw(t, url, version, id, false)
			if !present {
				t.Fatal("the session was not kept")
			}
			// mochi sends the session's PUBRECs again, before it reads.
			for range 2 {
				if pk := dev.Read(); pk.FixedHeader.Type != packets.Pubrec || pk.PacketID != 7 && pk.PacketID != 8 {
					t.Fatalf("after the reconnect: %+v", pk)
				}
			}
			dev.Publish(7, 2, false, "sensors/door", "B") // a new message, the id reused
			if rec := dev.Expect(packets.Pubrec, 7); rec.ReasonCode != 0 {
				t.Fatalf("PUBREC for B: reason %#x", rec.ReasonCode)
			}
			if n := g.Stats().Buffer.Appended; n != 3 {
				t.Fatalf("PUBREC for B with %d messages committed, want 3: A, C and B", n)
			}
			dev.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: 7})
			dev.Expect(packets.Pubcomp, 7)
			dev.Publish(8, 2, true, "sensors/door", "C") // C sent again, as it should be: a copy
			dev.Expect(packets.Pubrec, 8)
			dev.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: 8})
			dev.Expect(packets.Pubcomp, 8)
			// A sentinel after them: once it is in the stream, so is
			// everything the gateway stored before it.
			dev.Publish(9, 2, false, "sensors/door", "end")
			dev.Expect(packets.Pubrec, 9)
			dev.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: 9})
			dev.Expect(packets.Pubcomp, 9)

			wait.For(t, "the sentinel in the stream", func() bool {
				for _, m := range natstest.Messages(t, srv.URL()) {
					if string(m.Data()) == "end" {
						return true
					}
				}
				return false
			})
			var got []string
			for _, m := range natstest.Messages(t, srv.URL()) {
				got = append(got, string(m.Data()))
			}
			if fmt.Sprint(got) != "[A C B end]" {
				t.Fatalf("stream holds %q, want A, C, B, end once each (forwarder %+v)", got, g.Stats().Forward)
			}
		})
	}
}
