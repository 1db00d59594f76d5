// Package modbussim is a Modbus TCP device in the process, for tests and
// the demo: units with holding and input registers, coils and discrete
// inputs, that count the requests they answer, can refuse addresses
// (illegal data address) and can be made to stop answering. It serves
// with github.com/simonvetter/modbus's server.
package modbussim

import (
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"time"

	"github.com/simonvetter/modbus"
)

// A Server is the device (or a Modbus TCP gateway in front of several).
type Server struct {
	URL string // tcp://127.0.0.1:port

	srv   *modbus.ModbusServer
	mu    sync.Mutex
	units map[uint8]*Unit
}

// A Unit is one slave id's tables. Hook, if set, runs before each
// request of the unit is answered (the demo's meter moves its values).
type Unit struct {
	Holding  map[uint16]uint16
	Input    map[uint16]uint16
	Coils    map[uint16]bool
	Discrete map[uint16]bool
	// Refused addresses answer "illegal data address"; so does any
	// address no table above holds.
	Refused map[uint16]bool
	// Silent makes the unit stop answering: each request waits Silent
	// and then fails (the client has timed out by then).
	Silent   time.Duration
	Hook     func(u *Unit)
	Requests int
}

// NewUnit is an empty unit.
func NewUnit() *Unit {
	return &Unit{Holding: map[uint16]uint16{}, Input: map[uint16]uint16{}, Coils: map[uint16]bool{}, Discrete: map[uint16]bool{}, Refused: map[uint16]bool{}}
}

// Start serves units at addr (host:port; port 0 picks a free one).
func Start(addr string, units map[uint8]*Unit) (*Server, error) {
	if addr == "" || addr[len(addr)-2:] == ":0" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		addr = l.Addr().String()
		l.Close()
	}
	s := &Server{URL: "tcp://" + addr, units: units}
	srv, err := modbus.NewServer(&modbus.ServerConfiguration{URL: s.URL, Timeout: time.Minute, MaxClients: 16,
		Logger: log.New(io.Discard, "", 0)}, s)
	if err != nil {
		return nil, err
	}
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("modbussim: %s: %w", addr, err)
	}
	s.srv = srv
	return s, nil
}

// Close stops serving and drops every connection.
func (s *Server) Close() error { return s.srv.Stop() }

// Do runs f on the units with the server's lock held.
func (s *Server) Do(f func(units map[uint8]*Unit)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s.units)
}

// Requests is how many requests unit has had.
func (s *Server) Requests(unit uint8) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.units[unit]; u != nil {
		return u.Requests
	}
	return 0
}

// unit finds the unit and counts the request; the lock is held on return
// unless it fails.
func (s *Server) unit(id uint8) (*Unit, error) {
	s.mu.Lock()
	u := s.units[id]
	if u == nil {
		s.mu.Unlock()
		return nil, modbus.ErrGWTargetFailedToRespond
	}
	u.Requests++
	if d := u.Silent; d > 0 {
		s.mu.Unlock()
		time.Sleep(d)
		return nil, modbus.ErrGWTargetFailedToRespond
	}
	if u.Hook != nil {
		u.Hook(u)
	}
	return u, nil
}

// access reads n values of table from addr, refusing any address the
// unit does not hold, and then writes args there if write.
func access[V uint16 | bool](u *Unit, table map[uint16]V, addr, n uint16, write bool, args []V) ([]V, error) {
	out := make([]V, n)
	for k := range n {
		a := addr + k
		v, ok := table[a]
		if !ok || u.Refused[a] {
			return nil, modbus.ErrIllegalDataAddress
		}
		out[k] = v
	}
	if write {
		for k, v := range args {
			table[addr+uint16(k)] = v
		}
	}
	return out, nil
}

// HandleCoils serves the coils.
func (s *Server) HandleCoils(r *modbus.CoilsRequest) ([]bool, error) {
	u, err := s.unit(r.UnitId)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	return access(u, u.Coils, r.Addr, r.Quantity, r.IsWrite, r.Args)
}

// HandleDiscreteInputs serves the discrete inputs.
func (s *Server) HandleDiscreteInputs(r *modbus.DiscreteInputsRequest) ([]bool, error) {
	u, err := s.unit(r.UnitId)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	return access[bool](u, u.Discrete, r.Addr, r.Quantity, false, nil)
}

// HandleHoldingRegisters serves the holding registers.
func (s *Server) HandleHoldingRegisters(r *modbus.HoldingRegistersRequest) ([]uint16, error) {
	u, err := s.unit(r.UnitId)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	return access(u, u.Holding, r.Addr, r.Quantity, r.IsWrite, r.Args)
}

// HandleInputRegisters serves the input registers.
func (s *Server) HandleInputRegisters(r *modbus.InputRegistersRequest) ([]uint16, error) {
	u, err := s.unit(r.UnitId)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	return access[uint16](u, u.Input, r.Addr, r.Quantity, false, nil)
}
