// Package metrics owns blockd's Prometheus endpoint (--metrics). Nothing
// is counted here on the data path: a collector reads, at scrape time, the
// counters the other packages keep anyway (each node's blockcore.IOStats,
// the exports' request counters, the jobs' progress, the monitors' client
// counts), taking the lists of nodes, jobs and exports on the graph owner
// with a timeout so that a busy owner cannot hang a scrape. Only commands
// and the owner's queue wait are counted here, by wrapping the dispatcher
// and through Owner.ObserveWait.
package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"blockd/blockcore"
	"blockd/exports"
	"blockd/jobs"
	"blockd/qmp"
	"blockd/schema"
)

// ClientCounter is a QMP or JSON-RPC server.
type ClientCounter interface {
	Clients() (now int, total uint64)
}

// Sources are what the collector reads.
type Sources struct {
	Owner   *blockcore.Owner
	Graph   *blockcore.Graph
	Jobs    *jobs.Manager
	Exports *exports.Registry
	// Clients maps a protocol name ("qmp", "jsonrpc") to its server.
	Clients map[string]ClientCounter
}

// OwnerTimeout bounds how long a scrape waits for the graph owner to take
// its request; past it the scrape answers without node, job and export
// metrics and counts blockd_scrape_owner_timeouts_total.
const OwnerTimeout = 2 * time.Second

// Metrics is the registry served on the endpoint.
type Metrics struct {
	src            Sources
	reg            *prometheus.Registry
	commands       *prometheus.CounterVec
	ownerWait      prometheus.Histogram
	scrapeTimeouts prometheus.Counter
}

// New returns the metrics of a daemon made of src. Call it before the
// owner runs: it installs the owner's queue-wait observer.
func New(src Sources) *Metrics {
	m := &Metrics{
		src: src,
		reg: prometheus.NewRegistry(),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blockd_commands_total",
			Help: "Commands run, by protocol, command name and result (ok or the QMP error class).",
		}, []string{"protocol", "command", "result"}),
		ownerWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "blockd_owner_queue_wait_seconds",
			Help:    "Time a command or graph request waited before the graph owner goroutine took it.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12),
		}),
		scrapeTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockd_scrape_owner_timeouts_total",
			Help: "Scrapes that answered without graph metrics because the owner stayed busy.",
		}),
	}
	if src.Owner != nil {
		src.Owner.ObserveWait(func(d time.Duration) { m.ownerWait.Observe(d.Seconds()) })
	}
	m.reg.MustRegister(m.commands, m.ownerWait, m.scrapeTimeouts, collector{m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// SetClients names the servers whose clients are counted, once they
// exist. Call before serving.
func (m *Metrics) SetClients(c map[string]ClientCounter) { m.src.Clients = c }

// Handler serves the metrics in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Dispatcher wraps d so that every command it runs is counted under proto.
// Only commands that exist reach Execute, so command names stay bounded.
func (m *Metrics) Dispatcher(proto string, d qmp.Dispatcher) qmp.Dispatcher {
	return counting{d, proto, m.commands}
}

type counting struct {
	qmp.Dispatcher
	proto string
	c     *prometheus.CounterVec
}

func (c counting) Execute(ctx context.Context, name string, args json.RawMessage, deliver func(json.RawMessage, error)) {
	c.Dispatcher.Execute(ctx, name, args, func(ret json.RawMessage, err error) {
		result := "ok"
		if err != nil {
			result = schema.AsError(err).Class
		}
		c.c.WithLabelValues(c.proto, name, result).Inc()
		deliver(ret, err)
	})
}

// ParseAddress checks a --metrics value: unix:PATH or tcp:HOST:PORT.
func ParseAddress(spec string) (network, addr string, err error) {
	network, addr, ok := cutPrefix(spec)
	if !ok || addr == "" {
		return "", "", fmt.Errorf("expected unix:PATH or tcp:HOST:PORT")
	}
	if network == "tcp" {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return "", "", fmt.Errorf("expected tcp:HOST:PORT: %v", err)
		}
	}
	return network, addr, nil
}

func cutPrefix(spec string) (string, string, bool) {
	for _, n := range []string{"unix", "tcp"} {
		if len(spec) > len(n) && spec[:len(n)+1] == n+":" {
			return n, spec[len(n)+1:], true
		}
	}
	return "", "", false
}

// Serve answers scrapes on l (any path) until l is closed.
func (m *Metrics) Serve(l net.Listener) error {
	srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second}
	err := srv.Serve(l)
	if errors.Is(err, net.ErrClosed) || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
