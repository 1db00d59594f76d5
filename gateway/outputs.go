package gateway

import (
	"fmt"

	"periph.io/x/conn/v3/gpio"

	"github.com/edgegw/edgegw/gateway/config"
)

// output is a GPIO output of the outputs section, with the level last set.
type output struct {
	pin   string
	out   gpio.PinOut
	level gpio.Level
}

// openOutputs opens c's outputs. One that the running config already
// has on the same pin is kept as it is, level included: a config change
// must not flip a relay; a new one starts at its initial level.
func (g *Gateway) openOutputs(c *config.Config) (map[string]*output, error) {
	open := g.o.OpenOutput
	if open == nil {
		open = func(name string) (gpio.PinOut, error) { return hostLine(name) }
	}
	g.mu.Lock()
	old := g.outputs
	g.mu.Unlock()
	m := map[string]*output{}
	for _, oc := range c.Outputs {
		if o := old[oc.Name]; o != nil && o.pin == oc.Pin {
			m[oc.Name] = o
			continue
		}
		p, err := open(oc.Pin)
		if err != nil {
			return nil, fmt.Errorf("outputs %s: %w", oc.Name, err)
		}
		level := gpio.Level(oc.Initial == "high")
		if err := p.Out(level); err != nil {
			return nil, fmt.Errorf("outputs %s: set %s %s: %w", oc.Name, oc.Pin, level, err)
		}
		m[oc.Name] = &output{pin: oc.Pin, out: p, level: level}
	}
	return m, nil
}

// setOutput drives the named output.
func (g *Gateway) setOutput(name string, level gpio.Level) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	o := g.outputs[name]
	if o == nil {
		var names []string
		for n := range g.outputs {
			names = append(names, n)
		}
		return fmt.Errorf("no output %q (outputs: %v)", name, names)
	}
	if err := o.out.Out(level); err != nil {
		return fmt.Errorf("set %s (%s) %s: %w", name, o.pin, level, err)
	}
	o.level = level
	return nil
}
