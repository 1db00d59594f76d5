package forward_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// The fleet's upstream as deploy/ defines it: the hub's nats-server config
// (accounts, one user per gateway with its permissions) and the stream
// definition. A gateway with only its own permissions forwards into the
// stream created from the definition; it cannot publish as another
// gateway, nor delete the stream.
func TestFleetUpstreamFromDeploy(t *testing.T) {
	// The hub's accounts and users, on one loopback node.
	srv := natstest.StartHub(t, "../../deploy/upstream/hub.conf")
	if hub := natstest.HubOptions(t, "../../deploy/upstream/hub.conf"); !hub.Websocket.Compression || hub.Websocket.TLSConfig == nil || hub.Websocket.Port != 443 {
		t.Fatalf("hub.conf should include the metered links' WebSocket listener: %+v", hub.Websocket)
	}

	// The stream, created by an operator from the definition.
	data, err := os.ReadFile("../../deploy/upstream/telemetry-stream.json")
	if err != nil {
		t.Fatal(err)
	}
	var cfg jetstream.StreamConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("telemetry-stream.json: %v", err)
	}
	if cfg.Replicas != 3 || cfg.Duplicates < 2*time.Minute || !cfg.DenyDelete {
		t.Fatalf("the fleet stream should be R3, with a duplicate window of at least 2m and deletes denied: %+v", cfg)
	}
	cfg.Replicas = 1 // one node here
	ops, err := nats.Connect(srv.URL(), nats.UserInfo("ops", "ops-pw"))
	if err != nil {
		t.Fatal(err)
	}
	defer ops.Close()
	js, _ := jetstream.New(ops)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatalf("create the stream from its definition: %v", err)
	}

	// The gateway lobby-pi-01, with its own user: create is off in a fleet.
	const n = 500
	q, err := buffer.Open(filepath.Join(t.TempDir(), "buf.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for i := range n {
		e := event.Event{Subject: fmt.Sprintf("telemetry.lobby-pi-01.room%d", i%3), Source: "sensors/x", Time: t0, Payload: []byte(fmt.Sprint(i))}
		b, _ := e.Marshal(nil)
		if _, err := q.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	nc, err := forward.Connect(forward.ConnOptions{Servers: []string{srv.URL()}, User: "lobby-pi-01", Password: "lobby-pw", InboxPrefix: forward.InboxPrefix("lobby-pi-01")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	f, err := forward.New(q, nc, forward.Options{
		GatewayID: "lobby-pi-01",
		Stream:    forward.StreamOptions{Name: "TELEMETRY"},
		Filters:   []string{"telemetry.lobby-pi-01.>"},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Each session reads the stream's info and this gateway's last message
	// (or, with a cursor, its messages above it) before it publishes: both
	// are allowed, or nothing would drain. A second run reads back.
	runForwarder(t, f, q, nil)
	for i := n; i < n+10; i++ {
		e := event.Event{Subject: "telemetry.lobby-pi-01.room0", Source: "sensors/x", Time: t0, Payload: []byte(fmt.Sprint(i))}
		b, _ := e.Marshal(nil)
		if _, err := q.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if f, err = forward.New(q, nc, forward.Options{GatewayID: "lobby-pi-01", Stream: forward.StreamOptions{Name: "TELEMETRY"}, Filters: []string{"telemetry.lobby-pi-01.>"}}); err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, nil)
	s, err := js.Stream(ctx, "TELEMETRY")
	if err != nil {
		t.Fatal(err)
	}
	if msgs := s.CachedInfo().State.Msgs; msgs != n+10 {
		t.Fatalf("stream holds %d, want %d", msgs, n+10)
	}

	// What the gateway's user must not do.
	denied := make(chan error, 4)
	gwc, err := nats.Connect(srv.URL(), nats.UserInfo("lobby-pi-01", "lobby-pw"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer gwc.Close()
	// Nor read another gateway's telemetry: not by the message-get APIs,
	// not by a consumer on another's subjects or of another name, nor
	// delete or pull from another's consumer.
	for _, subj := range []string{"telemetry.van-07.spoofed", "$JS.API.STREAM.DELETE.TELEMETRY", "$JS.API.STREAM.PURGE.TELEMETRY",
		"$JS.API.DIRECT.GET.TELEMETRY", "$JS.API.DIRECT.GET.TELEMETRY.telemetry.van-07.x", "$JS.API.STREAM.MSG.GET.TELEMETRY",
		"$JS.API.CONSUMER.CREATE.TELEMETRY.edgegw_rb_lobby-pi-01.telemetry.van-07.>",
		"$JS.API.CONSUMER.CREATE.TELEMETRY.edgegw_rb_lobby-pi-01.telemetry.>",
		"$JS.API.CONSUMER.CREATE.TELEMETRY.edgegw_rb_van-07.telemetry.van-07.>",
		"$JS.API.CONSUMER.CREATE.TELEMETRY.anyname",
		"$JS.API.CONSUMER.MSG.NEXT.TELEMETRY.analytics", "$JS.API.CONSUMER.DELETE.TELEMETRY.analytics"} {
		gwc.Publish(subj, []byte("x"))
		select {
		case err := <-denied:
			if !strings.Contains(err.Error(), "Permissions Violation") || !strings.Contains(err.Error(), subj) {
				t.Errorf("publish to %s: %v", subj, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("gateway lobby-pi-01 may publish to %s", subj)
		}
	}
	if _, err := s.Info(ctx); err != nil {
		t.Fatalf("the stream is gone: %v", err)
	}

	// A typo in the stream name under these permissions: the hub answers
	// the stream's API with a permission error, not "not found". Run goes
	// on buffering (a gateway that exits buffers nothing) and says, in
	// Stats (/status, /readyz), the name to check.
	typo, err := forward.New(q, nc, forward.Options{
		GatewayID: "lobby-pi-01",
		Stream:    forward.StreamOptions{Name: "TELEMETRYY"},
		Filters:   []string{"telemetry.lobby-pi-01.>"},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- typo.Run(runCtx) }()
	wait.For(t, "a config error naming upstream.stream.name", func() bool {
		st := typo.Stats()
		return st.ConfigError && strings.Contains(st.LastError, forward.ErrConfig.Error()) && strings.Contains(st.LastError, "upstream.stream.name")
	})
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run with a misspelt stream under per-gateway permissions: %v", err)
	}
}

// The single-node hub recipe, as docs/upstream.md gives it: nats-server
// with deploy/upstream/hub-single.conf (only its ports and store moved to
// the test's), the stream from telemetry-stream-single.json as it is
// (the cluster's needs 3 replicas: "replicas > 1 not supported in
// non-clustered mode"), a gateway with its own user, and a consumer that
// reads the data back as `nats sub --stream` would.
func TestSingleNodeHubFromDeploy(t *testing.T) {
	hub := natstest.HubWithWebSocket(t, "../../deploy/upstream/hub-single.conf")
	if !hub.JetStream || hub.Cluster.Port != 0 || len(hub.Routes) != 0 {
		t.Fatalf("hub-single.conf should run JetStream on one node, no routes: %+v", hub.Cluster)
	}
	if !hub.Websocket.Compression || hub.Websocket.TLSConfig == nil || hub.Websocket.NoTLS {
		t.Fatalf("websocket.conf should be a WebSocket listener with compression behind TLS: %+v", hub.Websocket)
	}
	wsPort := natstest.FreePort(t)
	srv := natstest.Start(t, func(o *server.Options) {
		port, store := o.Port, o.StoreDir
		*o = *hub
		o.Host, o.Port, o.StoreDir = "127.0.0.1", port, store
		o.Websocket.Host, o.Websocket.Port = "127.0.0.1", wsPort
		o.HTTPHost, o.HTTPPort = "", 0
		o.NoLog, o.NoSigs = true, true
	})
	data, err := os.ReadFile("../../deploy/upstream/telemetry-stream-single.json")
	if err != nil {
		t.Fatal(err)
	}
	var cfg jetstream.StreamConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	// The same stream as the cluster's, but for the replicas.
	clusterData, _ := os.ReadFile("../../deploy/upstream/telemetry-stream.json")
	var cluster jetstream.StreamConfig
	json.Unmarshal(clusterData, &cluster)
	cluster.Replicas, cluster.Description = cfg.Replicas, cfg.Description
	if !reflect.DeepEqual(cluster, cfg) || cfg.Replicas != 1 {
		t.Fatalf("telemetry-stream-single.json differs from telemetry-stream.json beyond replicas:\n%+v\n%+v", cfg, cluster)
	}
	ops, err := nats.Connect(srv.URL(), nats.UserInfo("ops", "ops-pw"))
	if err != nil {
		t.Fatal(err)
	}
	defer ops.Close()
	js, _ := jetstream.New(ops)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatalf("create the stream from telemetry-stream-single.json as it is: %v", err)
	}

	q, err := buffer.Open(filepath.Join(t.TempDir(), "buf.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for i := range 10 {
		e := event.Event{Subject: fmt.Sprintf("telemetry.lobby-pi-01.room%d", i%3), Source: "sensors/x", Time: t0, Payload: []byte(fmt.Sprint(i))}
		b, _ := e.Marshal(nil)
		q.Append(ctx, b)
	}
	// The gateway on a metered link: wss:// with compression, as
	// docs/upstream.md gives it.
	nc, err := forward.Connect(forward.ConnOptions{Servers: []string{srv.WSURL()}, User: "lobby-pi-01", Password: "lobby-pw", InboxPrefix: forward.InboxPrefix("lobby-pi-01"),
		CAFile: natstest.HubCA(hub), Compression: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	f, _ := forward.New(q, nc, forward.Options{GatewayID: "lobby-pi-01", Stream: forward.StreamOptions{Name: "TELEMETRY"}, Filters: []string{"telemetry.lobby-pi-01.>"}})
	runForwarder(t, f, q, nil)

	// Reading it back: an ordered consumer on the gateway's subjects.
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"telemetry.lobby-pi-01.>"}})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(10, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for m := range batch.Messages() {
		if string(m.Data()) != fmt.Sprint(i) || m.Headers().Get(forward.HeaderGateway) != "lobby-pi-01" {
			t.Fatalf("message %d: %s %q %v", i, m.Subject(), m.Data(), m.Headers())
		}
		i++
	}
	if i != 10 {
		t.Fatalf("read back %d of 10", i)
	}
}

// The hub's permissions for command endpoints (deploy/upstream): a
// gateway serves its own (an operator's request reaches it and its
// answer comes back) and cannot serve another's.
func TestFleetGatewayServesOnlyItsOwnCommands(t *testing.T) {
	srv := natstest.StartHub(t, "../../deploy/upstream/hub.conf")
	denied := make(chan error, 4)
	gw, err := nats.Connect(srv.URL(), nats.UserInfo("lobby-pi-01", "lobby-pw"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	if _, err := gw.Subscribe("edgegw.lobby-pi-01.status", func(m *nats.Msg) { m.Respond([]byte("lobby ok")) }); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Subscribe("edgegw.van-07.status", func(m *nats.Msg) { m.Respond([]byte("impostor")) }); err != nil {
		t.Fatal(err)
	}
	gw.Flush()
	ops, err := nats.Connect(srv.URL(), nats.UserInfo("ops", "ops-pw"))
	if err != nil {
		t.Fatal(err)
	}
	defer ops.Close()
	if m, err := ops.Request("edgegw.lobby-pi-01.status", nil, 2*time.Second); err != nil || string(m.Data) != "lobby ok" {
		t.Fatalf("the gateway's own endpoint: %v", err)
	}
	if m, err := ops.Request("edgegw.van-07.status", nil, time.Second); err == nil {
		t.Fatalf("lobby-pi-01 answered van-07's endpoint: %q", m.Data)
	}
	select {
	case err := <-denied:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), "edgegw.van-07") {
			t.Fatalf("want a permission violation for edgegw.van-07: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no permission violation for another gateway's endpoint")
	}
}
