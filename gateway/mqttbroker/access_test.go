package mqttbroker_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/edgegw/edgegw/gateway/mqttbroker"
)

// The example users file in deploy/ loads, and its hashes are of the
// passwords it says.
func TestExampleUsersFile(t *testing.T) {
	users, err := mqttbroker.LoadUsers("../../deploy/mqtt-users.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 2 || bcrypt.CompareHashAndPassword([]byte(users[0].PasswordHash), []byte("change-me")) != nil {
		t.Fatalf("users %+v", users)
	}
}

func TestUsersFileErrors(t *testing.T) {
	hash, _ := mqttbroker.HashPassword("pw")
	for name, tc := range map[string]struct{ yaml, want string }{
		"no users":   {"users: []\n", "no users"},
		"no name":    {"users:\n  - password_hash: " + hash + "\n", "users[0].name is missing"},
		"twice":      {"users:\n  - {name: a, password_hash: " + hash + "}\n  - {name: a, password_hash: " + hash + "}\n", `"a" appears twice`},
		"no hash":    {"users:\n  - name: a\n", "password_hash is missing"},
		"plaintext":  {"users:\n  - {name: a, password_hash: hunter2}\n", "not a bcrypt hash"},
		"bad filter": {"users:\n  - {name: a, password_hash: " + hash + ", publish: [a/#/b]}\n", "'#' must be a whole level and the last"},
		"typo":       {"users:\n  - {name: a, password_hash: " + hash + ", publsh: [a]}\n", "publsh"},
	} {
		path := filepath.Join(t.TempDir(), "users.yaml")
		os.WriteFile(path, []byte(tc.yaml), 0o600)
		if _, err := mqttbroker.LoadUsers(path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}
