package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/host/v3"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/sensors"
)

// cmdI2CScan lists the addresses that answer on a bus, and the sensors
// known to use them.
func cmdI2CScan(args []string, stdout, stderr io.Writer) int {
	fs := flags("i2c scan", stderr)
	name := fs.String("bus", "1", "I²C bus: a number or /dev/i2c-N")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, err := host.Init(); err != nil {
		fmt.Fprintln(stderr, "edgegw: periph:", err)
		return 1
	}
	bus, err := i2creg.Open(*name)
	if err != nil {
		if len(i2creg.All()) == 0 {
			fmt.Fprintf(stderr, "edgegw: no I²C bus on this machine (no /dev/i2c-*): enable I²C (sudo raspi-config nonint do_i2c 0, or dtparam=i2c_arm=on in /boot/firmware/config.txt) and reboot\n")
		} else {
			fmt.Fprintf(stderr, "edgegw: I²C bus %q: %v; the buses here are: %s (is the user in group i2c?)\n", *name, err, busNames())
		}
		return 1
	}
	defer bus.Close()
	found := sensors.Scan(bus)
	for _, f := range found {
		known := "unknown"
		if len(f.Known) > 0 {
			known = strings.Join(f.Known, " or ")
		}
		fmt.Fprintf(stdout, "%#04x  %s\n", f.Addr, known)
	}
	fmt.Fprintf(stdout, "%d device(s) on bus %s\n", len(found), *name)
	return 0
}

// cmdSensorsRead reads every configured sensor once: a field check for
// installers. It exits 1 if any sensor cannot be read.
func cmdSensorsRead(args []string, stdout, stderr io.Writer) int {
	fs := flags("sensors read", stderr)
	cf := addConfigFlags(fs, defaultConfig)
	cfgPath := cf.config
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := cf.load(true)
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	g, err := gateway.New(cfg, gateway.Options{})
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	pollers, err := g.Pollers()
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	var events int
	for _, sc := range cfg.Sensors {
		if sensors.IsGPIO(sc.Driver) {
			events++
			fmt.Fprintf(stdout, "%-24s not read: a %s on %s reports edges as they happen; watch them with edgegw run --log-level debug\n", sc.Name, sc.Driver, sc.Pin)
		}
	}
	if len(pollers) == 0 && events == 0 {
		fmt.Fprintln(stderr, "edgegw: no sensors in", *cfgPath)
		return 1
	}
	code := 0
	for _, p := range pollers {
		r, err := p.ReadOnce()
		if err != nil {
			fmt.Fprintf(stdout, "%-24s FAILED  %v\n", p.Name(), err)
			code = 1
			continue
		}
		fmt.Fprintf(stdout, "%-24s %s%s\n", p.Name(), r.TS.Format(time.RFC3339), valuesLine(r))
	}
	return code
}

// valuesLine is a reading's values, sorted by name: "  a=1  model=EM340".
func valuesLine(r sensors.Payload) string {
	names := make([]string, 0, len(r.Values)+len(r.Text))
	for k := range r.Values {
		names = append(names, k)
	}
	for k := range r.Text {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		if t, ok := r.Text[k]; ok {
			fmt.Fprintf(&b, "  %s=%q", k, t)
		} else {
			fmt.Fprintf(&b, "  %s=%g", k, r.Values[k])
		}
	}
	return b.String()
}

func busNames() string {
	var names []string
	for _, r := range i2creg.All() {
		names = append(names, r.Name)
	}
	return strings.Join(names, ", ")
}
