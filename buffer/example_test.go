package buffer_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/edgegw/edgegw/buffer"
)

// Open a buffer, append two events (Append returns once they are on disk),
// read them back from the oldest, and acknowledge them once they are
// delivered: the writer deletes them, and Flush waits for that.
func Example() {
	dir, _ := os.MkdirTemp("", "buffer-example")
	defer os.RemoveAll(dir)

	q, err := buffer.Open(filepath.Join(dir, "buffer.db"), &buffer.Options{MaxBytes: 64 << 20})
	if err != nil {
		log.Fatal(err)
	}
	defer q.Close()
	ctx := context.Background()

	first, err := q.Append(ctx, []byte(`{"t":21.5}`), []byte(`{"t":21.6}`))
	if err != nil {
		log.Fatal(err) // not stored: the caller keeps the events (an MQTT source does not PUBACK)
	}
	recs, err := q.Read(first, 100)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range recs {
		fmt.Printf("seq %d: %s\n", r.Seq-first+1, r.Data)
	}
	if err := q.Ack(recs[len(recs)-1].Seq); err != nil {
		log.Fatal(err)
	}
	if err := q.Flush(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("held:", q.Stats().Events)
	// Output:
	// seq 1: {"t":21.5}
	// seq 2: {"t":21.6}
	// held: 0
}
