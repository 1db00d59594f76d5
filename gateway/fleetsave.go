package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/edgegw/edgegw/gateway/status"
)

// fleetSaved is <data_dir>/fleet.json: the last known good overlays and
// what the watch has seen, so that a box that reboots offline runs its
// last applied config and does not retry a change it refused.
type fleetSaved struct {
	Bucket  string             `json:"bucket"`
	Created time.Time          `json:"bucket_created"` // the bucket's identity: recreated, it differs
	Seen    map[string]uint64  `json:"seen"`
	Applied map[string]kvValue `json:"applied"`
	Status  status.FleetStatus `json:"status"`
}

// load reads fleet.json; a missing file is a first start.
func (a *fleetAgent) load() error {
	a.saved = fleetSaved{Bucket: a.f.ConfigBucket, Seen: map[string]uint64{}, Applied: map[string]kvValue{}}
	data, err := os.ReadFile(a.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	var s fleetSaved
	if err := json.Unmarshal(data, &s); err != nil {
		a.log.Error("the last known good fleet config is unreadable; starting from the local file", "file", a.path, "err", err)
		return nil
	}
	if s.Bucket != a.f.ConfigBucket {
		a.log.Warn("fleet.config_bucket changed; the last known good from the old bucket is dropped", "was", s.Bucket)
		return nil
	}
	if s.Seen == nil {
		s.Seen = map[string]uint64{}
	}
	if s.Applied == nil {
		s.Applied = map[string]kvValue{}
	}
	a.saved = s
	return nil
}

// save writes fleet.json whole and durably: a temporary file, fsync,
// rename, fsync of the directory.
func (a *fleetAgent) save() error {
	data, err := json.MarshalIndent(a.saved, "", "  ")
	if err != nil {
		return err
	}
	tmp := a.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, a.path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(a.path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
