package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// errRestart ends one watch so that the next starts at once.
var errRestart = errors.New("restart the watch")

// errNoBucket: the config bucket is not there yet, as on a new fleet.
var errNoBucket = errors.New("fleet: no config bucket")

// watch reports the gateway's two config keys to out until ctx ends. A
// KV watch stops delivering after a connection loss and does not come
// back by itself (nats.go #1777), so each watch lives for one connection:
// it is made again after a reconnect, a closed watch, or a bucket that
// was recreated (its creation time differs), and reports each key's
// latest value again; run drops what it has seen (note).
func (a *fleetAgent) watch(ctx context.Context, out chan<- kvUpdate) {
	const first = 250 * time.Millisecond // a server just restarted may need a moment for JetStream
	backoff := first
	var logged string
	for ctx.Err() == nil {
		err := a.watchOnce(ctx, out)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errRestart) {
			backoff = first
			continue
		}
		if msg := err.Error(); msg != logged {
			if errors.Is(err, errNoBucket) {
				// A new fleet: nothing to apply until someone sets a key.
				a.log.Info("no fleet config yet; watching for it", "bucket", a.f.ConfigBucket)
			} else {
				a.log.Warn("fleet config watch interrupted; retrying", "bucket", a.f.ConfigBucket, "err", err, "retry_in", backoff)
			}
			logged = msg
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// recheckBucket says whether the bucket the watch reads is still the one it
// opened: deleted is an error, made again is errRestart; a bucket that does
// not answer this time is not news.
func (a *fleetAgent) recheckBucket(ctx context.Context, kv jetstream.KeyValue, created time.Time) error {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := bucketCreated(rctx, kv)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("bucket %s: %w", a.f.ConfigBucket, err)
	case err == nil && !c.Equal(created):
		return errRestart // recreated
	}
	return nil
}

// waitConnected returns once the control connection is up, or why it
// never will be.
func (a *fleetAgent) waitConnected(ctx context.Context) error {
	for !a.nc.IsConnected() {
		if a.nc.IsClosed() {
			return errors.New("the control connection is closed")
		}
		t := time.NewTimer(250 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// openBucket opens the config bucket and reads when it was created (a
// bucket made again is a new history).
func (a *fleetAgent) openBucket(ctx context.Context) (jetstream.KeyValue, time.Time, error) {
	js, err := jetstream.New(a.nc)
	if err != nil {
		return nil, time.Time{}, err
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(rctx, a.f.ConfigBucket)
	var created time.Time
	if err == nil {
		created, err = bucketCreated(rctx, kv)
	}
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, time.Time{}, fmt.Errorf("%w: no bucket %s yet (edgegw fleet set makes it)", errNoBucket, a.f.ConfigBucket)
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("bucket %s: %w", a.f.ConfigBucket, err)
	}
	return kv, created, nil
}

func (a *fleetAgent) watchOnce(ctx context.Context, out chan<- kvUpdate) error {
	if err := a.waitConnected(ctx); err != nil {
		return err
	}
	reconnects := a.nc.Stats().Reconnects
	kv, created, err := a.openBucket(ctx)
	if err != nil {
		return err
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	var ws [2]jetstream.KeyWatcher
	for i, key := range a.keys {
		w, err := kv.Watch(wctx, key)
		if err != nil {
			return fmt.Errorf("watch %s: %w", key, err)
		}
		defer w.Stop()
		ws[i] = w
	}
	var seen, current [2]bool
	send := func(u kvUpdate) error {
		select {
		case out <- u:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	got := func(i int, e jetstream.KeyValueEntry, ok bool) error {
		switch {
		case !ok:
			return errors.New("the watch closed")
		case e == nil: // every current value delivered
			if !seen[i] {
				if err := send(kvUpdate{key: a.keys[i], created: created, absent: true}); err != nil {
					return err
				}
			}
			if current[i] = true; current[0] && current[1] {
				return send(kvUpdate{caughtUp: true})
			}
			return nil
		}
		seen[i] = true
		v := kvValue{Revision: e.Revision()}
		if e.Operation() == jetstream.KeyValuePut {
			v.Present, v.Data = true, string(e.Value())
		}
		return send(kvUpdate{key: a.keys[i], created: created, v: v})
	}
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	recheck := time.NewTicker(a.f.Heartbeat)
	defer recheck.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-ws[0].Updates():
			err = got(0, e, ok)
		case e, ok := <-ws[1].Updates():
			err = got(1, e, ok)
		case <-poll.C:
			if a.nc.Stats().Reconnects != reconnects {
				return errRestart // the watch may have missed what happened meanwhile
			}
		case <-recheck.C:
			err = a.recheckBucket(ctx, kv, created)
		}
		if err != nil {
			return err
		}
	}
}

// bucketCreated is when the bucket's stream was made: its identity.
func bucketCreated(ctx context.Context, kv jetstream.KeyValue) (time.Time, error) {
	st, err := kv.Status(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if s, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		return s.StreamInfo().Created, nil
	}
	return time.Time{}, nil
}
