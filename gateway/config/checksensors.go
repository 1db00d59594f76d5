package config

import (
	"fmt"
	"reflect"
	"strconv"

	"github.com/edgegw/edgegw/gateway/subject"
	"github.com/edgegw/edgegw/sensors"
)

// checkSensors returns the sensors' subjects.
func (c *Config) checkSensors(k checker) (filters []string) {
	names := map[string]bool{}
	onBus := map[string]int{} // bus/address → sensor index
	for i, s := range c.Sensors {
		p := fmt.Sprintf("sensors[%d]", i)
		if s.Name == "" {
			k.bad(p+".name", "missing; name each sensor, e.g. lobby-climate")
		} else if names[s.Name] {
			k.bad(p+".name", "%q is used by another sensor", s.Name)
		}
		names[s.Name] = true
		d, known := sensors.DriverNamed(s.Driver)
		switch {
		case s.Driver == "":
			k.bad(p+".driver", "missing; one of %s", sensors.DriverNames())
		case !known:
			k.bad(p+".driver", "%q is not one of %s", s.Driver, sensors.DriverNames())
		default:
			spec, err := s.Spec()
			if err != nil {
				k.bad(p+".register", "%v", err)
			}
			for _, e := range d.CheckSpec(spec) {
				k.bad(p+"."+e.Field, "%s", e.Msg)
			}
			if addr := d.Addr(spec); d.Bus == sensors.BusI2C && addr != 0 && s.Bus != "" {
				key := s.Bus + "/" + strconv.Itoa(int(addr))
				if j, ok := onBus[key]; ok {
					k.bad(p+".address", "%#x on bus %s is also sensors[%d]'s: two devices on one bus cannot share an address (many have an address pin: see docs/sensors.md)", addr, s.Bus, j)
				} else {
					onBus[key] = i
				}
			}
		}
		if s.Driver == "modbus" {
			checkModbusShared(k, c.Sensors, i)
		}
		if s.Report != nil {
			if sensors.IsGPIO(s.Driver) {
				k.bad(p+".report", "a %s reports each change as it happens; report by exception is for polled sensors", s.Driver)
			}
			for _, e := range s.Report.Check() {
				k.bad(p+"."+e.Field, "%s", e.Msg)
			}
		}
		s.Route.check(k, p)
		if s.Interval < 0 {
			k.bad(p+".interval", "must be positive")
		} else if s.Interval < MinInterval {
			k.bad(p+".interval", "%s is under the limit of %s", s.Interval, MinInterval)
		}
		if subj, err := subject.ForSensor(s.Subject, c.Gateway.ID, s.Name); err != nil {
			if ValidID(c.Gateway.ID) && s.Name != "" {
				k.bad(p+".subject", "%v", err)
			}
		} else if !ownSubject(s.Subject, c.Gateway.ID) {
			k.bad(p+".subject", errShared, s.Subject)
		} else {
			filters = append(filters, subj)
		}
	}
	return filters
}

// checkModbusShared checks sensors[i] against the modbus sensors before
// it at the same URL, which share its connection: one unit id each, and
// one set of serial settings.
func checkModbusShared(k checker, all []SensorConfig, i int) {
	s := all[i]
	for j, o := range all[:i] {
		if o.Driver != "modbus" || o.URL != s.URL || s.URL == "" {
			continue
		}
		if o.UnitID == s.UnitID {
			k.bad(fmt.Sprintf("sensors[%d].unit_id", i), "%d at %s is also sensors[%d]'s: one unit, one sensor (list all its registers there)", s.UnitID, s.URL, j)
		}
		if !reflect.DeepEqual(o.Serial, s.Serial) {
			k.bad(fmt.Sprintf("sensors[%d].serial", i), "differs from sensors[%d]'s on the same port %s: a port has one speed and framing", j, s.URL)
		}
		return
	}
}
