package forward_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/natstest"
)

// forwardSome forwards 100 events over a connection made with co and checks
// they arrive.
func forwardSome(t *testing.T, srv *natstest.Server, co forward.ConnOptions, checkURL string) {
	t.Helper()
	co.Servers = []string{srv.URL()}
	nc, err := forward.Connect(co, nil)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer nc.Close()
	q := fillQueue(t, filepath.Join(t.TempDir(), "buf.db"), 0, 100)
	defer q.Close()
	f, err := forward.New(q, nc, options())
	if err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, nil)
	if st := f.Stats(); st.Acked != 100 {
		t.Fatalf("acked %d of 100", st.Acked)
	}
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUserPasswordAndWrongCredential(t *testing.T) {
	const secret = "s3cr3t-pa55"
	srv := natstest.Start(t, func(o *server.Options) { o.Username, o.Password = "edge", secret })
	forwardSome(t, srv, forward.ConnOptions{User: "edge", Password: secret}, "")

	start := time.Now()
	_, err := forward.Connect(forward.ConnOptions{Servers: []string{srv.URL()}, User: "edge", Password: "wrong-" + secret}, nil)
	if err == nil {
		t.Fatal("wrong password: no error")
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("wrong password took %s to report", time.Since(start))
	}
	msg := err.Error()
	if !strings.Contains(strings.ToLower(msg), "authorization") || !strings.Contains(msg, "credentials") {
		t.Fatalf("error does not say what is wrong: %v", err)
	}
	if strings.Contains(msg, secret) {
		t.Fatalf("error leaks the password: %v", err)
	}
	// A password in the URL does not leak either.
	_, err = forward.Connect(forward.ConnOptions{Servers: []string{"nats://edge:wrong-" + secret + "@" + strings.TrimPrefix(srv.URL(), "nats://")}}, nil)
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("URL credentials: %v", err)
	}
}

func TestToken(t *testing.T) {
	srv := natstest.Start(t, func(o *server.Options) { o.Authorization = "tok-123" })
	forwardSome(t, srv, forward.ConnOptions{Token: "tok-123"}, "")
	if _, err := forward.Connect(forward.ConnOptions{Servers: []string{srv.URL()}, Token: "nope"}, nil); err == nil {
		t.Fatal("wrong token: no error")
	}
}

func TestNKeySeed(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	srv := natstest.Start(t, func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} })
	forwardSome(t, srv, forward.ConnOptions{NKeySeedFile: writeFile(t, "user.nk", seed)}, "")

	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	if _, err := forward.Connect(forward.ConnOptions{Servers: []string{srv.URL()}, NKeySeedFile: writeFile(t, "other.nk", otherSeed)}, nil); err == nil {
		t.Fatal("unknown nkey: no error")
	}
}

// A decentralised-auth server (operator, account with JetStream, user JWT)
// and a .creds file, as NGS or a fleet's own operator would issue.
func TestCredsFile(t *testing.T) {
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	oclaims, _ := jwt.DecodeOperatorClaims(ojwt)

	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	ajwt, err := ac.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}

	creds := func(signer nkeys.KeyPair) string {
		ukp, _ := nkeys.CreateUser()
		upub, _ := ukp.PublicKey()
		uc := jwt.NewUserClaims(upub)
		uc.IssuerAccount = apub
		ujwt, err := uc.Encode(signer)
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := ukp.Seed()
		b, err := jwt.FormatUserConfig(ujwt, seed)
		if err != nil {
			t.Fatal(err)
		}
		return writeFile(t, "user.creds", b)
	}

	skp, _ := nkeys.CreateAccount() // the system account
	spub, _ := skp.PublicKey()
	sjwt, err := jwt.NewAccountClaims(spub).Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	srv := natstest.Start(t, func(o *server.Options) {
		o.TrustedOperators = []*jwt.OperatorClaims{oclaims}
		r := &server.MemAccResolver{}
		r.Store(apub, ajwt)
		r.Store(spub, sjwt)
		o.AccountResolver = r
		o.SystemAccount = spub
	})
	forwardSome(t, srv, forward.ConnOptions{CredsFile: creds(akp)}, "")

	stranger, _ := nkeys.CreateAccount() // signs a user the server does not trust
	if _, err := forward.Connect(forward.ConnOptions{Servers: []string{srv.URL()}, CredsFile: creds(stranger)}, nil); err == nil {
		t.Fatal("creds signed by an unknown account: no error")
	}
	if _, err := forward.Connect(forward.ConnOptions{Servers: []string{srv.URL()}, CredsFile: filepath.Join(t.TempDir(), "missing.creds")}, nil); err == nil || !strings.Contains(err.Error(), "missing.creds") {
		t.Fatalf("missing creds file: %v", err)
	}
}

// TLS with a private CA and a client certificate (mutual TLS).
func TestMutualTLS(t *testing.T) {
	ca, caKey := natstest.NewCert(t, nil, nil, "edgegw test CA", true)
	serverCert, serverKey := natstest.NewCert(t, ca, caKey, "127.0.0.1", false)
	clientCert, clientKey := natstest.NewCert(t, ca, caKey, "lobby-pi-01", false)
	caFile := writeFile(t, "ca.pem", natstest.PEMCert(ca))
	srv := natstest.Start(t, func(o *server.Options) {
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		o.TLSConfig = &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{serverCert.Raw}, PrivateKey: serverKey}},
			ClientCAs:    pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS12,
		}
		o.TLS, o.TLSVerify = true, true
	})
	forwardSome(t, srv, forward.ConnOptions{
		CAFile:   caFile,
		CertFile: writeFile(t, "client.pem", natstest.PEMCert(clientCert)),
		KeyFile:  writeFile(t, "client.key", natstest.PEMKey(t, clientKey)),
	}, "")

	// Without the client certificate, or without the CA, it is a clear error.
	if _, err := forward.Connect(forward.ConnOptions{Servers: []string{srv.URL()}, CAFile: caFile}, nil); err == nil {
		t.Fatal("no client certificate: no error")
	}
	other, _ := natstest.NewCert(t, nil, nil, "another CA", true)
	_, err := forward.Connect(forward.ConnOptions{Servers: []string{srv.URL()}, CAFile: writeFile(t, "other.pem", natstest.PEMCert(other)),
		CertFile: writeFile(t, "c.pem", natstest.PEMCert(clientCert)), KeyFile: writeFile(t, "c.key", natstest.PEMKey(t, clientKey))}, nil)
	if err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("server cert from an unknown CA: %v", err)
	}
}
