package web

import (
	"runtime"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edgegw/edgegw/gateway/status"
)

// metrics are the gateway's Prometheus metrics. Counters and gauges are
// read from the parts' Stats at scrape time (the exporter pattern: nothing
// is counted twice, nothing drifts); the two latency histograms are fed by
// the buffer's and the forwarder's hooks. Every gateway has its own
// registry: no global state.
type metrics struct {
	reg       *prometheus.Registry
	commit    prometheus.Histogram // buffer commit latency
	ack       prometheus.Histogram // publish → PubAck latency
	collector *collector
}

func newMetrics(rt Runtime) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "edgegw_buffer_commit_duration_seconds",
			Help:    "Time of one buffer transaction: write and fsync, for a batch of appends and acks.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5ms … 4s
		}),
		ack: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "edgegw_upstream_ack_duration_seconds",
			Help:    "Time from publishing an event to JetStream to its PubAck.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14), // 1ms … 8s
		}),
		collector: newCollector(rt),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.commit, m.ack, m.collector,
	)
	return m
}

// collector turns a Status snapshot into metrics at scrape time.
type collector struct {
	rt Runtime

	buildInfo *prometheus.Desc

	srcUp, srcIngested, srcRejected, srcDropped, srcStoreErrors, srcSetAside, srcErrors, srcAge      *prometheus.Desc
	brokerClients, brokerPending, brokerRefused, brokerRetained, brokerRetainedBytes, brokerSessions *prometheus.Desc

	bufOpen, bufEvents, bufBytes, bufFileBytes, bufMaxBytes, bufOldestAge *prometheus.Desc
	bufAppended, bufAcked, bufDropped, bufRejected                        *prometheus.Desc
	bufDead, bufDeadBytes, bufDeadTotal, bufDeadDropped, bufQuarantined   *prometheus.Desc
	laneEvents, laneBytes, laneOldestAge, clockSynced, upBackfill         *prometheus.Desc

	upConnected, upPublished, upAcked, upResent, upSkipped, upRejected, upExpired, upLagEvents, upLagSeconds *prometheus.Desc
	upWire, upWirePerReading                                                                                 *prometheus.Desc

	written, writtenPerReading, writtenPerDay, cardLife *prometheus.Desc
}

func newCollector(rt Runtime) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("edgegw_"+name, help, labels, nil)
	}
	return &collector{
		rt:        rt,
		buildInfo: d("build_info", "Always 1; the labels say which edgegw this is.", "version", "goversion", "gateway"),

		srcUp:          d("source_up", "1 when the source can deliver: MQTT connected and subscribed, sensor read OK, pin open.", "source", "kind"),
		srcIngested:    d("source_ingested_total", "Events from the source committed to the buffer.", "source"),
		srcRejected:    d("source_rejected_total", "Messages refused as bad input (acknowledged and dropped), by reason.", "source", "reason"),
		srcDropped:     d("source_dropped_total", "Events not stored, by reason: duplicate (a redelivered copy of a stored MQTT message), retained (a retained MQTT copy sent on (re)subscribe, not a new reading), not_stored (a sensor reading the buffer refused), suppressed (a reading report by exception did not send: nothing moved past its band).", "source", "reason"),
		srcStoreErrors: d("source_store_errors_total", "Commits of the source's events that the buffer refused (full under when_full: reject, or a write error), each retry once. MQTT messages stay unacknowledged and are retried.", "source"),
		srcSetAside:    d("source_set_aside_total", "Events too large for buffer.max_bytes, put in the buffer's dead-letter lane instead.", "source"),
		srcErrors:      d("source_errors_total", "Failed opens and reads of a sensor or pin.", "source"),
		srcAge:         d("source_last_reading_age_seconds", "Seconds since the source's last event was committed (absent before the first).", "source"),

		brokerClients:       d("mqtt_server_clients", "MQTT clients connected to the embedded broker."),
		brokerPending:       d("mqtt_server_pending_logins", "Connections to the embedded broker that have not logged in yet (bounded by mqtt.server.max_pending)."),
		brokerRefused:       d("mqtt_server_refused_total", "Connections, logins, publishes and subscriptions the embedded broker refused, by reason: pending, pending_ip, timeout, not_connect, too_large (before login), bad_login, backoff, client_id, user_limit, acl, retained_limit.", "reason"),
		brokerRetained:      d("mqtt_server_retained_messages", "Retained messages the embedded broker keeps (bounded by mqtt.server.max_retained)."),
		brokerRetainedBytes: d("mqtt_server_retained_bytes", "Payload bytes of the retained messages kept (bounded by mqtt.server.max_retained_bytes)."),
		brokerSessions:      d("mqtt_server_sessions_file_bytes", "Size of the embedded broker's sessions file (bounded at start by mqtt.server.sessions_max_bytes)."),

		bufOpen:        d("buffer_open", "1 while the buffer file is open."),
		bufEvents:      d("buffer_events", "Events held in the buffer."),
		bufBytes:       d("buffer_bytes", "Bytes held in the buffer (data plus 28 per event), the figure max_bytes bounds."),
		bufFileBytes:   d("buffer_file_bytes", "Size of the buffer file on disk."),
		bufMaxBytes:    d("buffer_max_bytes", "buffer.max_bytes (0: no limit)."),
		bufOldestAge:   d("buffer_oldest_age_seconds", "Age of the oldest event held (0 when empty)."),
		bufAppended:    d("buffer_appended_total", "Events appended over the life of the buffer file."),
		bufAcked:       d("buffer_acked_total", "Events acknowledged upstream and deleted, over the life of the buffer file."),
		bufDropped:     d("buffer_dropped_total", "Events dropped by the buffer, by reason and lane priority: full (drop_oldest at max_bytes, lowest priority first), age (max_age), ttl (the route's ttl).", "reason", "priority"),
		laneEvents:     d("buffer_lane_events", "Events held in the buffer, by lane priority.", "priority"),
		laneBytes:      d("buffer_lane_bytes", "Bytes held in the buffer, by lane priority.", "priority"),
		laneOldestAge:  d("buffer_lane_oldest_age_seconds", "Age of the oldest event held, by lane priority (0 when empty).", "priority"),
		clockSynced:    d("clock_synchronized", "1 while the wall clock is synchronized (adjtimex, or systemd-timesyncd)."),
		upBackfill:     d("upstream_backfill_total", "Events sent behind live ones (live_first), marked Edgegw-Backfill."),
		bufRejected:    d("buffer_rejected_total", "Events refused because the buffer was full (when_full: reject), each attempt counted."),
		bufDead:        d("buffer_dead_letters", "Events held in the dead-letter lane: set aside because they can never be stored or published (edgegw buffer dead-letters)."),
		bufDeadBytes:   d("buffer_dead_letter_bytes", "Bytes held in the dead-letter lane."),
		bufDeadTotal:   d("buffer_dead_letters_total", "Events ever set aside in the dead-letter lane."),
		bufDeadDropped: d("buffer_dead_letters_dropped_total", "Dead letters dropped because the lane was at its bound."),
		bufQuarantined: d("buffer_quarantined_total", "Damaged buffer files moved aside at open (their readable events salvaged)."),

		upConnected:      d("upstream_connected", "1 while connected to a NATS server."),
		upPublished:      d("upstream_published_total", "Publishes sent to JetStream, re-sends included."),
		upAcked:          d("upstream_acked_total", "Events the stream acknowledged."),
		upResent:         d("upstream_resent_total", "Publishes sent again after a failure (go-back-N)."),
		upSkipped:        d("upstream_skipped_total", "Events found already in the stream on (re)connect and not sent again."),
		upRejected:       d("upstream_rejected_total", "Events the stream can never take, set aside."),
		upExpired:        d("upstream_expired_total", "Events past their MQTT 5 message expiry, dropped unsent."),
		upWire:           d("upstream_wire_bytes_total", "Bytes of the uplink on the network since start, by direction (up, down): below TLS, after WebSocket compression, what a metered link bills.", "direction"),
		upWirePerReading: d("upstream_wire_bytes_per_reading", "The uplink's bytes on the network, both directions, per event acknowledged since start."),
		upLagEvents:      d("upstream_lag_events", "Buffered events not yet acknowledged by the stream."),
		upLagSeconds:     d("upstream_lag_seconds", "Age of the oldest event not yet acknowledged by the stream (0 when none)."),

		written:           d("storage_written_bytes_total", "Bytes written to storage since start, by file: buffer (its commits' pages), broker_sessions (the embedded broker's sessions file, estimated as three pages of the system page size per commit).", "file"),
		writtenPerReading: d("storage_written_per_reading_bytes", "Bytes written to storage since start per reading appended since start (SD wear)."),
		writtenPerDay:     d("storage_written_per_day_bytes", "Bytes written to storage per day, at the last hour's rate."),
		cardLife:          d("storage_card_life_years", "Years until the card (gateway.storage) has been written rated_writes times at the written-per-day rate; absent when gateway.storage is not set."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.rt.Status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(c.buildInfo, 1, st.Version, runtime.Version(), st.Gateway)

	c.sources(st.Sources, gauge, counter)

	b := st.Buffer
	gauge(c.bufOpen, b2f(b.Open))
	if b.Open {
		gauge(c.bufEvents, float64(b.Events))
		gauge(c.bufBytes, float64(b.Bytes))
		gauge(c.bufFileBytes, float64(b.FileBytes))
		gauge(c.bufMaxBytes, float64(b.MaxBytes))
		gauge(c.bufOldestAge, b.OldestAgeSeconds)
		counter(c.bufAppended, b.Appended)
		counter(c.bufAcked, b.Acked)
		c.lanes(b.Lanes, gauge, counter)
		gauge(c.clockSynced, b2f(b.ClockSynced))
		counter(c.bufRejected, b.Rejected)
		gauge(c.bufDead, float64(b.DeadLetters))
		gauge(c.bufDeadBytes, float64(b.DeadBytes))
		counter(c.bufDeadTotal, b.DeadTotal)
		counter(c.bufDeadDropped, b.DeadDropped)
		counter(c.bufQuarantined, b.Quarantined)
	}

	u := st.Upstream
	gauge(c.upConnected, b2f(u.Connected))
	counter(c.upPublished, u.Published)
	counter(c.upAcked, u.Acked)
	counter(c.upResent, u.Resent)
	counter(c.upSkipped, u.Skipped)
	counter(c.upBackfill, u.Backfill)
	counter(c.upRejected, u.Rejected)
	counter(c.upExpired, u.Expired)
	counter(c.upWire, uint64(u.WireUp), "up")
	counter(c.upWire, uint64(u.WireDown), "down")
	gauge(c.upWirePerReading, u.WirePerReading)
	if b.Open {
		gauge(c.upLagEvents, float64(u.LagEvents))
		gauge(c.upLagSeconds, u.LagSeconds)
	}

	sw := st.Storage
	for _, f := range sw.Files {
		counter(c.written, uint64(f.Written), f.File)
	}
	gauge(c.writtenPerReading, sw.PerReading)
	gauge(c.writtenPerDay, sw.PerDay)
	if sw.LifeYears > 0 {
		gauge(c.cardLife, sw.LifeYears)
	}
}

// sources sends the per-source metrics, and the embedded broker's.
func (c *collector) sources(sources []status.SourceStatus, gauge func(*prometheus.Desc, float64, ...string), counter func(*prometheus.Desc, uint64, ...string)) {
	for _, s := range sources {
		gauge(c.srcUp, b2f(s.Up), s.Name, s.Kind)
		counter(c.srcIngested, s.Ingested, s.Name)
		counter(c.srcStoreErrors, s.StoreErrors, s.Name)
		counter(c.srcSetAside, s.SetAside, s.Name)
		counter(c.srcDropped, s.Duplicates, s.Name, "duplicate")
		switch s.Kind {
		case status.KindMQTT, status.KindMQTTServer:
			counter(c.srcRejected, s.TooLarge, s.Name, "too_large")
			counter(c.srcRejected, s.Unmappable, s.Name, "unmappable")
			counter(c.srcDropped, s.Retained, s.Name, "retained")
		default:
			counter(c.srcDropped, s.NotStored, s.Name, "not_stored")
			counter(c.srcDropped, s.Suppressed, s.Name, "suppressed")
			counter(c.srcErrors, s.Errors, s.Name)
		}
		if s.LastReadingAge != nil {
			gauge(c.srcAge, *s.LastReadingAge, s.Name)
		}
		if s.Kind == status.KindMQTTServer && s.Pending != nil {
			gauge(c.brokerClients, float64(*s.Clients))
			gauge(c.brokerPending, float64(*s.Pending))
			for _, reason := range []string{"pending", "pending_ip", "timeout", "not_connect", "too_large", "bad_login", "backoff", "client_id", "user_limit", "acl", "retained_limit"} {
				counter(c.brokerRefused, s.Refused[reason], reason)
			}
			gauge(c.brokerRetained, float64(*s.RetainedKept))
			gauge(c.brokerRetainedBytes, float64(*s.RetainedBytes))
			gauge(c.brokerSessions, float64(*s.SessionsBytes))
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// lanes sends the per-lane metrics, by priority: lanes of one priority
// with different TTLs add up.
func (c *collector) lanes(lanes []status.LaneStatus, gauge func(*prometheus.Desc, float64, ...string), counter func(*prometheus.Desc, uint64, ...string)) {
	type sum struct {
		events               uint64
		bytes                int64
		oldest               float64
		full, age, ttl, seen uint64
	}
	var by [10]sum
	for _, l := range lanes {
		if l.Priority < 0 || l.Priority >= len(by) {
			continue
		}
		s := &by[l.Priority]
		s.seen++
		s.events += l.Events
		s.bytes += l.Bytes
		s.oldest = max(s.oldest, l.OldestAgeSeconds)
		s.full += l.DroppedFull
		s.age += l.DroppedAge
		s.ttl += l.DroppedTTL
	}
	for p, s := range by {
		if s.seen == 0 {
			continue
		}
		pr := strconv.Itoa(p)
		gauge(c.laneEvents, float64(s.events), pr)
		gauge(c.laneBytes, float64(s.bytes), pr)
		gauge(c.laneOldestAge, s.oldest, pr)
		counter(c.bufDropped, s.full, "full", pr)
		counter(c.bufDropped, s.age, "age", pr)
		counter(c.bufDropped, s.ttl, "ttl", pr)
	}
}
