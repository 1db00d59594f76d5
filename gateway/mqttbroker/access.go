package mqttbroker

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/edgegw/edgegw/gateway/mqttsource"
)

// A User may connect with its password; Publish and Subscribe are the
// topic filters it may publish to and subscribe to (none: nothing).
type User struct {
	Name         string   `yaml:"name"`
	PasswordHash string   `yaml:"password_hash"` // bcrypt: edgegw mqtt hash-password
	Publish      []string `yaml:"publish"`
	Subscribe    []string `yaml:"subscribe"`
}

// LoadUsers reads a users file: YAML with a list under users.
func LoadUsers(path string) ([]User, error) {
	data, err := os.ReadFile(path)
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
		for _, f := range append(append([]string(nil), u.Publish...), u.Subscribe...) {
			if err := mqttsource.ValidFilter(f); err != nil {
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

// access is the hook that authenticates clients and checks their ACL.
type access struct {
	mqtt.HookBase
	b *Broker
}

func (a *access) ID() string { return "edgegw-access" }

func (a *access) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (a *access) user(name string) *User {
	for i := range a.b.o.Users {
		if a.b.o.Users[i].Name == name {
			return &a.b.o.Users[i]
		}
	}
	return nil
}

func (a *access) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	name := string(pk.Connect.Username)
	if name == "" && a.b.o.AllowAnonymous {
		return true
	}
	u := a.user(name)
	ok := u != nil && bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), pk.Connect.Password) == nil
	if !ok {
		a.b.log.Warn("MQTT client refused: bad username or password", "client", cl.ID, "username", name, "remote", cl.Net.Remote)
	}
	return ok
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
		// A subscription's filter is allowed when the user's filter
		// matches it as a topic: every topic it matches, f matches.
		if mqttsource.Match(f, topic) {
			return true
		}
	}
	a.b.log.Warn("MQTT client denied by its ACL", "client", cl.ID, "username", name, "topic", topic, "publish", write)
	return false
}
