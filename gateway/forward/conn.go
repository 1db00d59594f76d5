package forward

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgegw/edgegw/gateway/secret"
	"github.com/edgegw/edgegw/gateway/tlsclient"
)

// ConnOptions say how to reach the upstream NATS servers.
type ConnOptions struct {
	Servers []string // nats://host:4222, tls://host:4222, ws://, wss://host:443; tried in turn
	Name    string   // connection name shown by the server (default "edgegw")

	// One of these authenticates; secrets are never logged.
	User, Password string
	Token          string
	NKeySeedFile   string // a file holding an NKey user seed
	CredsFile      string // a .creds file (JWT and seed)

	// TLS: CAFile verifies the servers; CertFile and KeyFile are this
	// gateway's client certificate for mutual TLS. They apply to tls://
	// and wss:// servers alike.
	CAFile, CertFile, KeyFile string

	// Compression turns on per-message deflate on ws:// and wss://
	// servers, its context kept from message to message (nats.go
	// compresses over WebSocket only): about a seventh of the bytes for
	// small readings (docs/upstream.md).
	Compression bool

	// Wire, if set, counts the connection's bytes on the network.
	Wire *Wire

	// ReconnectWait is the base delay between reconnect attempts (default
	// 2s); each attempt adds up to 1s of jitter, so a fleet does not
	// reconnect in lockstep.
	ReconnectWait time.Duration

	// InboxPrefix is where replies to this connection's requests arrive
	// (default nats.go's "_INBOX"). A gateway uses "_INBOX_<its id>", so
	// a hub can let it subscribe to its own replies only
	// (deploy/upstream/accounts.conf): under "_INBOX.>" every gateway
	// could read every reply in the account, other gateways' config
	// and status among them.
	InboxPrefix string
}

// InboxPrefix is the reply prefix of gateway id's connections.
func InboxPrefix(id string) string { return "_INBOX_" + id }

// Connect dials the upstream. It never gives up: with no server reachable it
// returns a connection that keeps retrying in the background, and one that
// drops reconnects forever. nats.go's reconnect buffer is disabled, so a
// publish while disconnected fails at once instead of living only in
// memory: the buffer is the only store.
func Connect(o ConnOptions, log *slog.Logger) (*nats.Conn, error) {
	if len(o.Servers) == 0 {
		return nil, errors.New("upstream: servers is empty; list at least one nats:// URL")
	}
	for i, s := range o.Servers {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("upstream: servers[%d] %q is not a URL like nats://host:4222", i, secret.URL(s))
		}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts, err := o.natsOptions(log)
	if err != nil {
		return nil, err
	}
	urls := strings.Join(o.Servers, ",")
	// A first attempt that may fail, so that a wrong credential or
	// certificate is an error now rather than a silent retry loop.
	nc, err := nats.Connect(urls, opts...)
	if err == nil {
		return nc, nil
	}
	if permanent(err) {
		return nil, fmt.Errorf("upstream: connect to %s: %w (check upstream credentials and TLS settings)", secret.URLs(o.Servers), err)
	}
	log.Warn("upstream unreachable; buffering and retrying in the background", "servers", secret.URLs(o.Servers), "err", err)
	nc, err = nats.Connect(urls, append(opts, nats.RetryOnFailedConnect(true))...)
	if err != nil {
		return nil, fmt.Errorf("upstream: connect to %s: %w", secret.URLs(o.Servers), err)
	}
	return nc, nil
}

// natsOptions are the connection's options: reconnect forever with
// jitter, no reconnect buffer, handlers that log, and the credential and
// TLS of o.
func (o ConnOptions) natsOptions(log *slog.Logger) ([]nats.Option, error) {
	name := o.Name
	if name == "" {
		name = "edgegw"
	}
	wait := o.ReconnectWait
	if wait <= 0 {
		wait = 2 * time.Second
	}
	var opts []nats.Option
	if o.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.InboxPrefix))
	}
	opts = append(opts,
		nats.Name(name),
		nats.MaxReconnects(-1),
		// nats.go closes the connection for good after the same auth
		// error twice; a hub restarting with its credentials in flux must
		// not cost a running gateway its uplink until restart.
		nats.IgnoreAuthErrorAbort(),
		nats.ReconnectBufSize(-1),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			return wait + rand.N(time.Second)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("upstream disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("upstream reconnected", "server", secret.URL(nc.ConnectedUrl()))
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("upstream connected", "server", secret.URL(nc.ConnectedUrl()))
		}),
		nats.ErrorHandler(func(nc *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				if prefix := nc.Opts.InboxPrefix; prefix != "" && strings.Contains(err.Error(), "Subscription to \""+prefix+".") {
					log.Error("the upstream does not let this gateway receive its replies: grant its user subscribe "+prefix+".> (deploy/upstream/accounts.conf); a hub that grants _INBOX.> instead needs upstream.inbox_prefix: _INBOX (any gateway could then read every reply)", "err", err)
					return
				}
				if msg := err.Error(); strings.Contains(msg, `Publish to "$JS.API.INFO"`) || strings.Contains(msg, `Publish to "$JS.API.STREAM.CREATE.`) || strings.Contains(msg, `Publish to "$JS.API.CONSUMER.DELETE.`) {
					// A missing fleet bucket the gateway tries to make, or
					// nats.go deleting a config watch's ephemeral consumer,
					// which a hub's gateway user may not: the fleet agent
					// says what is missing, the hub removes the consumer;
					// deploy/upstream grants no more.
					log.Debug("upstream refused creating a bucket or deleting a consumer (the hub's operator makes buckets; the hub removes ephemeral consumers)", "err", err)
					return
				}
				log.Error("upstream refused this gateway's user a permission; grant what deploy/upstream/hub.conf grants a gateway", "err", err)
				return
			}
			log.Warn("upstream error", "err", err)
		}),
	)
	auth, err := o.authOptions()
	if err != nil {
		return nil, err
	}
	return append(opts, auth...), nil
}

// authOptions are the credential, TLS, compression and wire counting of o.
func (o ConnOptions) authOptions() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case o.CredsFile != "":
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	case o.NKeySeedFile != "":
		nk, err := nats.NkeyOptionFromSeed(o.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("upstream: nkey_seed_file %s: %w", o.NKeySeedFile, err)
		}
		opts = append(opts, nk)
	case o.Token != "":
		opts = append(opts, nats.Token(o.Token))
	case o.User != "":
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.Compression {
		opts = append(opts, nats.Compression(true))
	}
	if o.Wire != nil {
		opts = append(opts, nats.SetCustomDialer(wireDialer{w: o.Wire, d: net.Dialer{Timeout: dialTimeout}}))
	}
	if o.CAFile != "" || o.CertFile != "" || o.KeyFile != "" {
		cfg, err := tlsclient.Config(o.CAFile, o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("upstream: tls.%w", err)
		}
		opts = append(opts, nats.Secure(cfg))
	}
	return opts, nil
}

// permanent reports connect errors that retrying will not fix.
func permanent(err error) bool {
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) {
		return true
	}
	if tlsclient.Untrusted(err) {
		return true
	}
	// nats.go reports a server that drops the connection after the TLS
	// handshake (a client certificate it does not accept) as a "tls error".
	msg := strings.ToLower(err.Error())
	// A creds or seed file that does not hold a key ("nkeys: no nkey seed
	// found") will not hold one on the next attempt either.
	for _, s := range []string{"authorization violation", "no such file", "tls:", "tls error", "certificate", "nkeys:", "permission denied"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
