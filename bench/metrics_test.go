package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/zap"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/events"
	"blockd/metrics"
	"blockd/schema"
)

// BenchmarkMetricsRandRead4K is 4 KiB random reads through a raw node on
// a file node, as BenchmarkRandRead4K/raw, without metrics ("off") and
// with the daemon's collector registered and scraped over HTTP every
// 100 ms during the run ("on"). The two alternate within one run.
func BenchmarkMetricsRandRead4K(b *testing.B) {
	for _, mode := range rotatedModes() {
		b.Run(mode, func(b *testing.B) {
			reg := schema.NewRegistry()
			g := blockcore.NewGraph(zap.NewNop(), events.NewBus())
			g.RegisterCommands(reg)
			o := blockcore.NewOwner(reg)
			var m *metrics.Metrics
			if mode == "on" {
				m = metrics.New(metrics.Sources{Owner: o, Graph: g})
			}
			go o.Run()
			defer o.Stop()
			for _, args := range []string{
				fmt.Sprintf(`{"driver": "file", "node-name": "f", "filename": %q}`, image(b)),
				`{"driver": "raw", "node-name": "r", "file": "f"}`,
			} {
				if _, err := o.Call(context.Background(), "blockdev-add", json.RawMessage(args)); err != nil {
					b.Fatal(err)
				}
			}
			defer func() { _ = o.Do(g.CloseAll) }()
			var dev blockio.Device
			_ = o.Do(func() { dev = g.Lookup("r").IO() })
			stop := make(chan struct{})
			done := make(chan struct{})
			if m != nil {
				srv := httptest.NewServer(m.Handler())
				defer srv.Close()
				go func() {
					defer close(done)
					t := time.NewTicker(100 * time.Millisecond)
					defer t.Stop()
					for {
						select {
						case <-stop:
							return
						case <-t.C:
							if resp, err := srv.Client().Get(srv.URL); err == nil {
								_, _ = io.Copy(io.Discard, resp.Body)
								_ = resp.Body.Close()
							}
						}
					}
				}()
			} else {
				close(done)
			}
			buf := make([]byte, 4096)
			r := rand.New(rand.NewPCG(5, 6))
			b.SetBytes(4096)
			for b.Loop() {
				if err := dev.ReadAt(buf, r.Int64N(imageSize/4096)*4096); err != nil {
					b.Fatal(err)
				}
			}
			close(stop)
			<-done
		})
	}
}

var metricsRounds int

func rotatedModes() []string {
	metricsRounds++
	if metricsRounds%2 == 0 {
		return []string{"on", "off"}
	}
	return []string{"off", "on"}
}
