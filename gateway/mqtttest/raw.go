package mqtttest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Raw is an MQTT client that sends the packets a test writes, byte for
// byte (mochi's codec), for what no client library will do: reuse a
// packet id, leave a flow half done.
type Raw struct {
	t       testing.TB
	conn    net.Conn
	r       *bufio.Reader
	version byte
}

// DialRaw connects to the broker at url (tcp://host:port) and sends a
// CONNECT with protocol version 4 (3.1.1) or 5; it returns once the
// CONNACK says the connection is accepted, and whether a session was
// present.
func DialRaw(t testing.TB, url string, version byte, clientID string, clean bool) (*Raw, bool) {
	t.Helper()
	c, ack := DialRawKeepalive(t, url, version, clientID, clean, 60, "", "")
	return c, ack.SessionPresent
}

// DialRawKeepalive is DialRaw with the CONNECT's keepalive (seconds) and
// a user and password ("": none); it returns the CONNACK.
func DialRawKeepalive(t testing.TB, url string, version byte, clientID string, clean bool, keepalive uint16, user, password string) (*Raw, packets.Packet) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "tcp://"))
	if err != nil {
		t.Fatal(err)
	}
	c := &Raw{t: t, conn: conn, r: bufio.NewReader(conn), version: version}
	t.Cleanup(func() { conn.Close() })
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: version,
		Connect:         packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: clientID, Clean: clean, Keepalive: keepalive},
	}
	if user != "" {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(user)
		pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(password)
	}
	if version == 5 && !clean {
		// MQTT 5 keeps a session past the connection only with an expiry.
		pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 3600, true
	}
	c.Send(pk)
	ack := c.Read()
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK: %+v", ack)
	}
	return c, ack
}

// Send writes pk.
func (c *Raw) Send(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = c.version
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Pubrel:
		pk.FixedHeader.Qos = 1 // [MQTT-3.6.1-1]
		err = pk.PubrelEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		err = fmt.Errorf("mqtttest: Raw does not send packet type %d", pk.FixedHeader.Type)
	}
	if err == nil {
		_, err = c.conn.Write(buf.Bytes())
	}
	if err != nil {
		c.t.Fatal(err)
	}
}

// Publish sends a PUBLISH of payload on topic with packet id id.
func (c *Raw) Publish(id uint16, qos byte, dup bool, topic, payload string) {
	c.t.Helper()
	c.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Dup: dup}, PacketID: id, TopicName: topic, Payload: []byte(payload)})
}

// Read returns the next packet the broker sends (within 30 s), decoded.
func (c *Raw) Read() packets.Packet {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	hb, err := c.r.ReadByte()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	pk := packets.Packet{ProtocolVersion: c.version}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		c.t.Fatal(err)
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		c.t.Fatal(err)
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		c.t.Fatal(err)
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	return pk
}

// Expect reads the next packet and fails unless it is of type typ with
// packet id id; it returns it.
func (c *Raw) Expect(typ byte, id uint16) packets.Packet {
	c.t.Helper()
	pk := c.Read()
	if pk.FixedHeader.Type != typ || pk.PacketID != id {
		c.t.Fatalf("got packet type %d id %d (reason %#x), want type %d id %d", pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode, typ, id)
	}
	return pk
}

// Close drops the connection without a DISCONNECT, as a lost link does.
func (c *Raw) Close() { c.conn.Close() }
