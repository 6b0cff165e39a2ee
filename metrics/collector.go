package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"blockd/blockcore"
	"blockd/exports"
	"blockd/jobs"
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	nodeRequests = desc("blockd_node_requests_total", "Requests on a node's data path, failed ones included.", "node", "driver", "op")
	nodeBytes    = desc("blockd_node_bytes_total", "Bytes of the requests on a node's data path that succeeded.", "node", "driver", "op")
	nodeFailed   = desc("blockd_node_failed_requests_total", "Requests on a node's data path that failed.", "node", "driver", "op")
	nodeLatency  = desc("blockd_node_request_duration_seconds", "Time requests on a node's data path took.", "node", "driver", "op")
	nodeHighest  = desc("blockd_node_write_highest_offset_bytes", "End of the highest write on the node (wr_highest_offset).", "node", "driver")

	exportConns    = desc("blockd_export_connections", "NBD clients connected to an export now.", "export", "type", "node")
	exportRequests = desc("blockd_export_requests_total", "Requests made by an export's clients, failed ones included.", "export", "op")
	exportBytes    = desc("blockd_export_bytes_total", "Bytes of an export's client requests that succeeded.", "export", "op")
	exportFailed   = desc("blockd_export_failed_requests_total", "An export's client requests that failed.", "export", "op")

	jobInfo     = desc("blockd_job_info", "One series per job, with its uuid (as in the logs) and status.", "job", "job_uuid", "type", "status")
	jobCurrent  = desc("blockd_job_progress_current", "Work a job has done (bytes for block jobs: copied or found to need no copy).", "job", "type")
	jobTotal    = desc("blockd_job_progress_total", "Work a job has to do (bytes for block jobs).", "job", "type")
	jobFraction = desc("blockd_job_progress_ratio", "current / total of a job's progress (0 while total is 0).", "job", "type")

	clientsNow   = desc("blockd_clients", "Clients connected now.", "protocol")
	clientsTotal = desc("blockd_client_connections_total", "Client connections accepted since start.", "protocol")
)

// latencyBounds are the histogram's upper bounds in seconds, as IOStats
// buckets them.
var latencyBounds = func() []float64 {
	b := make([]float64, blockcore.LatencyBuckets-1)
	for i := range b {
		b[i] = blockcore.LatencyBound(i).Seconds()
	}
	return b
}()

// collector reads every counter at scrape time.
type collector struct{ m *Metrics }

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{nodeRequests, nodeBytes, nodeFailed, nodeLatency, nodeHighest,
		exportConns, exportRequests, exportBytes, exportFailed, jobInfo, jobCurrent, jobTotal, jobFraction,
		clientsNow, clientsTotal} {
		ch <- d
	}
}

type nodeStat struct {
	name, driver string
	stats        *blockcore.IOStats
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	src := c.m.src
	for proto, s := range src.Clients {
		now, total := s.Clients()
		ch <- prometheus.MustNewConstMetric(clientsNow, prometheus.GaugeValue, float64(now), proto)
		ch <- prometheus.MustNewConstMetric(clientsTotal, prometheus.CounterValue, float64(total), proto)
	}
	if src.Owner == nil {
		return
	}
	// The lists are graph state, read on the owner; the counters they
	// point to are atomics, read here.
	var (
		nodes []nodeStat
		js    []jobs.JobStats
		xs    []exports.ExportStats
	)
	ctx, cancel := context.WithTimeout(context.Background(), OwnerTimeout)
	defer cancel()
	err := src.Owner.DoContext(ctx, func() {
		if src.Graph != nil {
			for _, n := range src.Graph.Nodes() {
				nodes = append(nodes, nodeStat{n.Name(), n.Driver().Name, n.Stats()})
			}
		}
		if src.Jobs != nil {
			js = src.Jobs.Stats()
		}
		if src.Exports != nil {
			xs = src.Exports.Stats()
		}
	})
	if err != nil {
		c.m.scrapeTimeouts.Inc()
		return
	}
	for _, n := range nodes {
		s := n.stats.Snapshot()
		for _, op := range blockcore.IOOps {
			o := s.Ops[op]
			ch <- prometheus.MustNewConstMetric(nodeRequests, prometheus.CounterValue, float64(o.Ops), n.name, n.driver, op.String())
			ch <- prometheus.MustNewConstMetric(nodeBytes, prometheus.CounterValue, float64(o.Bytes), n.name, n.driver, op.String())
			ch <- prometheus.MustNewConstMetric(nodeFailed, prometheus.CounterValue, float64(o.Failed), n.name, n.driver, op.String())
			ch <- latencyHistogram(nodeLatency, o, n.name, n.driver, op.String())
		}
		ch <- prometheus.MustNewConstMetric(nodeHighest, prometheus.GaugeValue, float64(s.WrHighestOffset), n.name, n.driver)
	}
	for _, x := range xs {
		ch <- prometheus.MustNewConstMetric(exportConns, prometheus.GaugeValue, float64(x.Connections), x.ID, x.Type, x.Node)
		s := x.IO.Snapshot()
		for _, op := range blockcore.IOOps {
			o := s.Ops[op]
			ch <- prometheus.MustNewConstMetric(exportRequests, prometheus.CounterValue, float64(o.Ops), x.ID, op.String())
			ch <- prometheus.MustNewConstMetric(exportBytes, prometheus.CounterValue, float64(o.Bytes), x.ID, op.String())
			ch <- prometheus.MustNewConstMetric(exportFailed, prometheus.CounterValue, float64(o.Failed), x.ID, op.String())
		}
	}
	for _, j := range js {
		ch <- prometheus.MustNewConstMetric(jobInfo, prometheus.GaugeValue, 1, j.ID, j.UUID, j.Type, j.Status)
		ch <- prometheus.MustNewConstMetric(jobCurrent, prometheus.GaugeValue, float64(j.Current), j.ID, j.Type)
		ch <- prometheus.MustNewConstMetric(jobTotal, prometheus.GaugeValue, float64(j.Total), j.ID, j.Type)
		ratio := 0.0
		if j.Total > 0 {
			ratio = float64(j.Current) / float64(j.Total)
		}
		ch <- prometheus.MustNewConstMetric(jobFraction, prometheus.GaugeValue, ratio, j.ID, j.Type)
	}
}

// latencyHistogram turns IOStats' buckets (each counting its own range)
// into Prometheus' cumulative ones.
func latencyHistogram(d *prometheus.Desc, o blockcore.OpSnapshot, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(latencyBounds))
	var cum uint64
	for i, le := range latencyBounds {
		cum += o.Latency[i]
		buckets[le] = cum
	}
	return prometheus.MustNewConstHistogram(d, o.Ops, float64(o.TotalNs)/1e9, buckets, labels...)
}
