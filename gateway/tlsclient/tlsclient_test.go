package tlsclient_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/gateway/tlsclient"
)

func TestConfigErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	for _, tt := range []struct {
		ca, cert, key, want string
	}{
		{ca: filepath.Join(dir, "missing.pem"), want: "ca_file: open"},
		{ca: notPEM, want: "holds no PEM certificate"},
		{cert: notPEM, want: "cert_file and key_file go together"},
		{cert: notPEM, key: notPEM, want: "cert_file/key_file"},
	} {
		if _, err := tlsclient.Config(tt.ca, tt.cert, tt.key); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Config(%q, %q, %q) = %v, want %q", tt.ca, tt.cert, tt.key, err, tt.want)
		}
	}
	if cfg, err := tlsclient.Config("", "", ""); err != nil || cfg.RootCAs != nil || cfg.MinVersion == 0 {
		t.Fatalf("system roots: %v %v", cfg, err)
	}
}
