package mqttbroker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wsListener is MQTT over WebSocket (subprotocol mqtt, binary frames),
// as mochi's listeners.Websocket, but it binds its port in Init: mochi's
// binds inside Serve, on a goroutine of its own, so a port already taken
// was only logged and the broker reported itself listening without it,
// and a client could find the port closed after the start returned.
type wsListener struct {
	addr      string
	ln        net.Listener
	srv       *http.Server
	log       *slog.Logger
	upgrader  websocket.Upgrader
	establish listeners.EstablishFn
	closeOnce sync.Once
}

func newWSListener(addr string) *wsListener {
	return &wsListener{addr: addr, upgrader: websocket.Upgrader{
		Subprotocols: []string{"mqtt"},
		CheckOrigin:  func(*http.Request) bool { return true }, // devices, not browsers' pages
	}}
}

func (l *wsListener) ID() string       { return "ws" }
func (l *wsListener) Address() string  { return l.addr }
func (l *wsListener) Protocol() string { return "ws" }

func (l *wsListener) Init(log *slog.Logger) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	l.ln, l.log = ln, log
	l.srv = &http.Server{Handler: http.HandlerFunc(l.handle), ReadHeaderTimeout: 10 * time.Second}
	return nil
}

func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.establish = establish
	if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		l.log.Error("MQTT WebSocket listener stopped", "error", err, "address", l.addr)
	}
}

func (l *wsListener) handle(w http.ResponseWriter, r *http.Request) {
	c, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade answered the client
	}
	defer c.Close()
	if err := l.establish(l.ID(), &wsConn{Conn: c.UnderlyingConn(), c: c}); err != nil {
		l.log.Debug("MQTT WebSocket connection ended", "error", err)
	}
}

func (l *wsListener) Close(closeClients listeners.CloseFn) {
	l.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = l.srv.Shutdown(ctx)
	})
	closeClients(l.ID())
}

// wsConn is a WebSocket connection as a net.Conn: reads run through the
// binary messages, each write is one message.
type wsConn struct {
	net.Conn
	c *websocket.Conn
	r io.Reader // the message being read; nil between messages
}

var errNotBinary = errors.New("mqtt over websocket: a message that is not binary")

func (ws *wsConn) Read(p []byte) (int, error) {
	for {
		if ws.r == nil {
			op, r, err := ws.c.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errNotBinary
			}
			ws.r = r
		}
		n, err := ws.r.Read(p)
		if errors.Is(err, io.EOF) {
			ws.r, err = nil, nil
			if n == 0 {
				continue // an empty message, or the end of one: read on
			}
		}
		return n, err
	}
}

func (ws *wsConn) Write(p []byte) (int, error) {
	if err := ws.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
