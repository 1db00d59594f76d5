package gateway_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/mqtttest"
	"github.com/edgegw/edgegw/gateway/natstest"
)

// MQTT over TLS to a broker whose certificate a private CA signed: with
// mqtt.tls.ca_file the gateway connects and forwards; with another CA it
// is an error at once, naming mqtt.tls, not a silent retry loop.
func TestMQTTOverTLS(t *testing.T) {
	if mqtttest.Mosquitto() {
		t.Skip("the TLS listener is mochi's")
	}
	ca, caKey := natstest.NewCert(t, nil, nil, "edgegw test CA", true)
	srvCert, srvKey := natstest.NewCert(t, ca, caKey, "127.0.0.1", false)
	pair, err := tls.X509KeyPair(natstest.PEMCert(srvCert), natstest.PEMKey(t, srvKey))
	if err != nil {
		t.Fatal(err)
	}
	broker := mqtttest.Start(t, mqtttest.Options{TLS: &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}})
	srv := natstest.Start(t, nil)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, natstest.PEMCert(ca), 0o600)

	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	cfg.MQTT.TLS.CAFile = caFile
	startGateway(t, cfg)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	deliverOne(t, paho.NewClientOptions().AddBroker(broker.URL()).SetClientID("pub").SetTLSConfig(&tls.Config{RootCAs: pool}), srv.URL())

	other, _ := natstest.NewCert(t, nil, nil, "another CA", true)
	otherFile := filepath.Join(dir, "other.pem")
	os.WriteFile(otherFile, natstest.PEMCert(other), 0o600)
	bad, _ := configFor(t, broker.URL(), srv.URL(), "")
	bad.MQTT.TLS.CAFile = otherFile
	bad.MQTT.ClientID = "edgegw-other"
	bad.HTTP.Listen = "127.0.0.1:0"
	g, _ := gateway.New(bad, gateway.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = g.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "mqtt.tls") || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a broker certificate from an unknown CA: %v", err)
	}
	t.Logf("error shown: %v", err)
}

// The embedded broker's TLS listener: a device that trusts the CA
// connects over TLS and what it publishes reaches the stream; with
// client_ca_file, a device without a client certificate is refused.
func TestEmbeddedBrokerTLS(t *testing.T) {
	ca, caKey := natstest.NewCert(t, nil, nil, "edgegw test CA", true)
	srvCert, srvKey := natstest.NewCert(t, ca, caKey, "127.0.0.1", false)
	devCert, devKey := natstest.NewCert(t, ca, caKey, "device-1", false)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o600)
		return p
	}
	certFile, keyFile := write("srv.pem", natstest.PEMCert(srvCert)), write("srv.key", natstest.PEMKey(t, srvKey))
	caFile := write("ca.pem", natstest.PEMCert(ca))
	srv := natstest.Start(t, nil)
	port := natstest.FreePort(t)
	cfg, _ := serverConfigFor(t, srv.URL(), fmt.Sprintf("    allow_anonymous: true\n    tls:\n      listen: 127.0.0.1:%d\n      cert_file: %s\n      key_file: %s\n      client_ca_file: %s", port, certFile, keyFile, caFile), "")
	startGateway(t, cfg)

	pool := x509.NewCertPool()
	pool.AddCert(ca)
	url := fmt.Sprintf("ssl://127.0.0.1:%d", port)
	pair, err := tls.X509KeyPair(natstest.PEMCert(devCert), natstest.PEMKey(t, devKey))
	if err != nil {
		t.Fatal(err)
	}
	deliverOne(t, paho.NewClientOptions().AddBroker(url).SetClientID("device-1").SetTLSConfig(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}), srv.URL())

	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("no-cert").SetTLSConfig(&tls.Config{RootCAs: pool}).SetAutoReconnect(false))
	if tok := c.Connect(); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
		t.Fatal("a device without a client certificate connected")
	}
}
