package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/sensors/modbussim"
)

// edgegw modbus read, the installer's probe: values in a type and order,
// a string, coils, and the device's exception, named.
func TestModbusRead(t *testing.T) {
	u := modbussim.EnergyMeter(time.Now())
	u.Holding[0], u.Holding[1], u.Holding[2] = 0x4142, 0x4300, 7
	u.Coils[4] = true
	sim, err := modbussim.Start("127.0.0.1:0", map[uint8]*modbussim.Unit{3: u})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	read := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(append([]string{"modbus", "read", "--url", sim.URL, "--unit", "3"}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, errs := read("--table", "input", "--address", "0", "--type", "float32")
	var v float64
	if _, err := fmt.Sscanf(strings.Fields(out)[3], "%g", &v); code != 0 || err != nil || v < 227 || v > 233 {
		t.Fatalf("float32 at input 0: exit %d, %q %q", code, out, errs)
	}
	code, out, _ = read("--address", "0", "--type", "string", "--length", "2")
	if code != 0 || !strings.Contains(out, `"ABC"`) {
		t.Fatalf("string: exit %d, %q", code, out)
	}
	code, out, _ = read("--address", "0", "--type", "uint16", "--count", "3")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || len(lines) != 3 || !strings.HasSuffix(lines[2], " 7") || !strings.HasPrefix(lines[2], "holding 2") {
		t.Fatalf("three uint16: exit %d, %q", code, out)
	}
	code, out, _ = read("--table", "coil", "--address", "4", "--type", "bool")
	if code != 0 || !strings.HasSuffix(strings.TrimSpace(out), " 1") {
		t.Fatalf("coil: exit %d, %q", code, out)
	}
	code, _, errs = read("--address", "500")
	if code != 1 || !strings.Contains(errs, "illegal data address") || !strings.Contains(errs, "holding 500") {
		t.Fatalf("unmapped address: exit %d, %q", code, errs)
	}
	code, _, errs = read("--table", "holdings")
	if code != 2 || !strings.Contains(errs, "--table: ") {
		t.Fatalf("bad table: exit %d, %q", code, errs)
	}
}

// edgegw sensors read covers modbus sensors: numbers and text.
func TestSensorsReadModbus(t *testing.T) {
	u := modbussim.EnergyMeter(time.Now())
	u.Holding[100], u.Holding[101] = 0x5344, 0x4d36
	sim, err := modbussim.Start("127.0.0.1:0", map[uint8]*modbussim.Unit{1: u})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "edgegw.yaml")
	os.WriteFile(path, []byte(fmt.Sprintf(`gateway:
  id: gw1
  data_dir: %s
sensors:
  - name: main-meter
    driver: modbus
    url: %s
    unit_id: 1
    registers:
      - {name: energy_kwh, table: input, address: 0x0156, type: float32}
      - {name: model, table: holding, address: 100, type: string, length: 2}
upstream:
  servers: [nats://127.0.0.1:4222]
`, dir, sim.URL)), 0o600)
	var out, errb bytes.Buffer
	code := run([]string{"sensors", "read", "--config", path}, &out, &errb)
	if code != 0 || !strings.Contains(out.String(), "energy_kwh=1234.") || !strings.Contains(out.String(), `model="SDM6"`) {
		t.Fatalf("exit %d: %s %s", code, out.String(), errb.String())
	}
}
