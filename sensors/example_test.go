package sensors_test

import (
	"fmt"
	"log"

	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/edgegw/edgegw/sensors"
)

// An MCP9808 on an I²C bus: here periph's i2ctest playback of the bytes the
// datasheet gives (set the resolution and wake it, then read the ambient
// temperature register: 0x00A0 is 10 °C). On a Pi the bus comes from
// periph's i2creg.Open("1") after host.Init().
func ExampleOpenMCP9808() {
	bus := &i2ctest.Playback{Ops: []i2ctest.IO{
		{Addr: 0x18, W: []byte{0x08, 0x03}},
		{Addr: 0x18, W: []byte{0x01, 0x00, 0x00}},
		{Addr: 0x18, W: []byte{0x05}, R: []byte{0x00, 0xa0}},
	}}
	s, err := sensors.OpenMCP9808(bus, 0x18)
	if err != nil {
		log.Fatal(err)
	}
	v, err := s.Read()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%.2f °C\n", v["temperature_c"])
	// Output: 10.00 °C
}
