//go:build linux && (amd64 || arm64)

package powercuttest_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/edgegw/edgegw/gateway/powercuttest"
)

// What was fsynced survives a cut; what was written after it does not,
// overwrites and growth alike.
func TestCutForgetsWhatWasNotSynced(t *testing.T) {
	f := powercuttest.Mount(t)
	p := filepath.Join(f.Dir, "data")
	file, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	file.WriteAt([]byte("durable."), 0)
	if err := file.Sync(); err != nil {
		t.Fatal(err)
	}
	file.WriteAt([]byte("LOST"), 0)
	file.WriteAt([]byte("and more lost"), 8)
	if lost := f.Cut(); lost == 0 {
		t.Fatal("the cut forgot no write")
	}
	if _, err := file.WriteAt([]byte("x"), 0); err == nil {
		t.Fatal("a write after the cut worked")
	}
	file.Close()
	f.Restore()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "durable." {
		t.Fatalf("after the cut the file holds %q, want %q", got, "durable.")
	}
	if back, _ := os.ReadFile(filepath.Join(f.Backing, "data")); string(back) != "durable." {
		t.Fatalf("backing file %q", back)
	}
}
