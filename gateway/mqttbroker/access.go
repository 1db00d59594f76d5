package mqttbroker

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/edgegw/edgegw/gateway/mqttroute"
)

// A User may connect with its password; Publish and Subscribe are the
// topic filters it may publish to and subscribe to (none: nothing).
type User struct {
	Name         string   `yaml:"name"`
	PasswordHash string   `yaml:"password_hash"` // bcrypt: edgegw mqtt hash-password
	Publish      []string `yaml:"publish"`
	Subscribe    []string `yaml:"subscribe"`
	// ClientIDs, if set, are the client ids the user may connect with:
	// "%u" stands for the user's name, a trailing "*" for any rest
	// (e.g. "%u-*"). Without them any id, but never one whose session
	// belongs to another user.
	ClientIDs []string `yaml:"client_ids,omitempty"`
	// MaxConnections caps the user's clients connected at once (0: only
	// the broker's max_connections).
	MaxConnections int `yaml:"max_connections,omitempty"`
}

// LoadUsers reads a users file: YAML with a list under users.
func LoadUsers(path string) ([]User, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrPermission) {
		return nil, fmt.Errorf("mqtt.server.users_file: %w: the service's dynamic user cannot read a root-only file; hand it over with LoadCredential=mqtt-users.yaml:%s in the unit and users_file: ${CREDENTIALS_DIRECTORY:-%s}/mqtt-users.yaml (docs/mqtt-server.md)", err, path, filepath.Dir(path))
	}
	if err != nil {
		return nil, fmt.Errorf("mqtt.server.users_file: %w", err)
	}
	var f struct {
		Users []User `yaml:"users"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("mqtt.server.users_file %s: %w", path, err)
	}
	seen := map[string]bool{}
	for i, u := range f.Users {
		switch {
		case u.Name == "":
			return nil, fmt.Errorf("mqtt.server.users_file %s: users[%d].name is missing", path, i)
		case seen[u.Name]:
			return nil, fmt.Errorf("mqtt.server.users_file %s: users[%d].name %q appears twice", path, i, u.Name)
		case u.PasswordHash == "":
			return nil, fmt.Errorf("mqtt.server.users_file %s: users[%d] (%s): password_hash is missing (make one with: edgegw mqtt hash-password)", path, i, u.Name)
		}
		if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
			return nil, fmt.Errorf("mqtt.server.users_file %s: users[%d] (%s): password_hash is not a bcrypt hash (make one with: edgegw mqtt hash-password): %v", path, i, u.Name, err)
		}
		if u.MaxConnections < 0 {
			return nil, fmt.Errorf("mqtt.server.users_file %s: users[%d] (%s): max_connections must not be negative", path, i, u.Name)
		}
		for _, id := range u.ClientIDs {
			if id == "" || strings.Contains(strings.TrimSuffix(id, "*"), "*") {
				return nil, fmt.Errorf("mqtt.server.users_file %s: users[%d] (%s): client_ids: %q is not a client id (\"%%u\" is the user's name, a trailing \"*\" any rest)", path, i, u.Name, id)
			}
		}
		for _, f := range append(append([]string(nil), u.Publish...), u.Subscribe...) {
			if err := mqttroute.ValidFilter(f); err != nil {
				return nil, fmt.Errorf("mqtt.server.users_file %s: users[%d] (%s): %w", path, i, u.Name, err)
			}
		}
		seen[u.Name] = true
	}
	if len(f.Users) == 0 {
		return nil, fmt.Errorf("mqtt.server.users_file %s: no users", path)
	}
	return f.Users, nil
}

// HashPassword is the bcrypt hash of password for a users file.
func HashPassword(password string) (string, error) {
	if password == "" {
		return "", errors.New("empty password")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	return string(h), err
}

// Why a login or an ACL check was refused: labels of
// Stats.RefusedConnections.
const (
	RefusedBadLogin = "bad_login"  // unknown user or wrong password
	RefusedBackoff  = "backoff"    // too many failed logins from the address: refused without a check
	RefusedClientID = "client_id"  // another user's client id, or one outside the user's client_ids
	RefusedACL      = "acl"        // a publish or subscription outside the user's ACL
	RefusedPerUser  = "user_limit" // the user's max_connections reached
)

// Failed logins: after failLimit failures from one address within
// failWindow, that address is refused without a password check for
// failBackoff, doubling up to failBackoffMax while it goes on.
const (
	failLimit      = 5
	failWindow     = time.Minute
	failBackoff    = 2 * time.Second
	failBackoffMax = 5 * time.Minute
)

// access is the hook that authenticates clients and checks their ACL.
type access struct {
	mqtt.HookBase
	b   *Broker
	srv *mqtt.Server

	// dummy is a bcrypt hash of the users' cost: an unknown user costs a
	// check as a known one does, so timing says nothing of who exists.
	// Made at the first unknown user, not at start (bcrypt is slow on
	// purpose, and the broker should listen at once).
	dummy func() []byte
	// One bcrypt check at a time for addresses with recent failures, two
	// for the others: a flood of wrong passwords neither takes every core
	// nor delays a device that logs in right.
	suspect, clean chan struct{}

	mu    sync.Mutex
	fails map[string]*failures // by address
}

type failures struct {
	n       int
	first   time.Time
	until   time.Time // refused without a check until then
	backoff time.Duration
}

func newAccess(b *Broker, srv *mqtt.Server) *access {
	cost := bcrypt.DefaultCost
	if len(b.o.Users) > 0 {
		if c, err := bcrypt.Cost([]byte(b.o.Users[0].PasswordHash)); err == nil {
			cost = c
		}
	}
	dummy := sync.OnceValue(func() []byte {
		h, _ := bcrypt.GenerateFromPassword([]byte("edgegw: not a user"), cost)
		return h
	})
	return &access{b: b, srv: srv, dummy: dummy, suspect: make(chan struct{}, 1), clean: make(chan struct{}, 2), fails: map[string]*failures{}}
}

func (a *access) ID() string { return "edgegw-access" }

func (a *access) Provides(b byte) bool {
	return b == mqtt.OnConnect || b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (a *access) user(name string) *User {
	for i := range a.b.o.Users {
		if a.b.o.Users[i].Name == name {
			return &a.b.o.Users[i]
		}
	}
	return nil
}

// OnConnect caps the client's keepalive (Options.MaxKeepalive) before
// mochi sets the connection's deadline from it.
func (a *access) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	limit := uint16(a.b.o.MaxKeepalive / time.Second)
	if ka := cl.State.Keepalive; ka == 0 || ka > limit {
		cl.State.Keepalive = limit
		cl.State.ServerKeepalive = true // MQTT 5: said in the CONNACK
	}
	return nil
}

func (a *access) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if gc, ok := cl.Net.Conn.(*guardConn); ok {
		defer gc.loggedIn()
	}
	name := string(pk.Connect.Username)
	addr := hostOf(cl.Net.Conn.RemoteAddr())
	if name == "" && a.b.o.AllowAnonymous {
		return a.clientIDFree(cl, name)
	}
	if until, refused := a.refusedUntil(addr); refused {
		a.b.refusals.add(RefusedBackoff, "MQTT logins refused without a check: too many failed logins from the address", "remote", addr, "until", until.UTC().Format(time.RFC3339))
		return false
	}
	u := a.user(name)
	if !a.check(u, pk.Connect.Password, addr) {
		a.failed(addr)
		a.b.refusals.add(RefusedBadLogin, "MQTT client refused: bad username or password", "client", cl.ID, "username", name, "remote", addr)
		return false
	}
	a.succeeded(addr)
	if len(u.ClientIDs) > 0 && !clientIDAllowed(u, cl.ID) {
		a.b.refusals.add(RefusedClientID, "MQTT client refused: the client id is not one of its user's client_ids", "client", cl.ID, "username", name)
		return false
	}
	if u.MaxConnections > 0 && a.connectedAs(name, cl.ID) >= u.MaxConnections {
		a.b.refusals.add(RefusedPerUser, "MQTT client refused: its user has max_connections connected", "client", cl.ID, "username", name, "limit", u.MaxConnections)
		return false
	}
	return a.clientIDFree(cl, name)
}

// check runs bcrypt (against a dummy hash for an unknown user) in the
// pool of the address's kind.
func (a *access) check(u *User, password []byte, addr string) bool {
	pool := a.clean
	a.mu.Lock()
	if a.fails[addr] != nil {
		pool = a.suspect
	}
	a.mu.Unlock()
	pool <- struct{}{}
	defer func() { <-pool }()
	if u == nil {
		_ = bcrypt.CompareHashAndPassword(a.dummy(), password)
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), password) == nil
}

func (a *access) refusedUntil(addr string) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.fails[addr]
	if f == nil || time.Now().After(f.until) {
		return time.Time{}, false
	}
	return f.until, true
}

func (a *access) failed(addr string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	f := a.fails[addr]
	if f == nil || now.Sub(f.first) > failWindow && now.After(f.until) {
		if len(a.fails) > 10_000 {
			clear(a.fails) // bounded, whatever the addresses
		}
		f = &failures{first: now, backoff: f.nextBackoff()}
		a.fails[addr] = f
	}
	if f.n++; f.n >= failLimit {
		f.until = now.Add(f.backoff)
		f.n, f.first = 0, now
		f.backoff = min(2*f.backoff, failBackoffMax)
	}
}

// nextBackoff is the backoff a new window starts with: the last one's,
// so an address that keeps failing keeps its longer wait.
func (f *failures) nextBackoff() time.Duration {
	if f == nil {
		return failBackoff
	}
	return f.backoff
}

func (a *access) succeeded(addr string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.fails, addr)
}

// connectedAs counts the connected clients of user name, other than id.
func (a *access) connectedAs(name, id string) int {
	n := 0
	for _, c := range a.srv.Clients.GetAll() {
		if c.ID != id && !c.Closed() && string(c.Properties.Username) == name {
			n++
		}
	}
	return n
}

// clientIDFree refuses a client id whose session (connected or kept)
// belongs to another user: taking it over would disconnect the owner
// and hand its session to whoever asked.
func (a *access) clientIDFree(cl *mqtt.Client, name string) bool {
	if old, ok := a.srv.Clients.Get(cl.ID); ok && string(old.Properties.Username) != name {
		a.b.refusals.add(RefusedClientID, "MQTT client refused: its client id belongs to another user's session", "client", cl.ID, "username", name, "owner", string(old.Properties.Username))
		return false
	}
	return true
}

// clientIDAllowed: id matches one of u's client_ids, where %u stands
// for the user's name and a trailing * for any rest.
func clientIDAllowed(u *User, id string) bool {
	for _, p := range u.ClientIDs {
		p = strings.ReplaceAll(p, "%u", u.Name)
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(id, prefix) || p == id {
			return true
		}
	}
	return false
}

func (a *access) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	name := string(cl.Properties.Username)
	if name == "" && a.b.o.AllowAnonymous {
		return true
	}
	u := a.user(name)
	if u == nil {
		return false
	}
	filters := u.Subscribe
	if write {
		filters = u.Publish
	}
	for _, f := range filters {
		// A subscription is allowed when the user's filter covers it:
		// every topic it matches, f matches ("+" does not cover "#").
		if covers(f, topic) {
			return true
		}
	}
	a.b.refusals.add(RefusedACL, "MQTT client denied by its ACL", "client", cl.ID, "username", name, "topic", topic, "publish", write)
	return false
}

// covers says whether filter f matches every topic that filter s (or a
// topic) matches.
func covers(f, s string) bool {
	if strings.HasPrefix(s, "$") != strings.HasPrefix(f, "$") && !strings.HasPrefix(f, "$") {
		return false // wildcards at the start never match $SYS-like topics
	}
	fl, sl := strings.Split(f, "/"), strings.Split(s, "/")
	for i, l := range fl {
		if l == "#" {
			return true
		}
		if i >= len(sl) || sl[i] == "#" {
			return false
		}
		if l != "+" && (l != sl[i] || sl[i] == "+") {
			return false
		}
	}
	return len(fl) == len(sl)
}
