package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"blockd/blockcore"
	"blockd/events"
	"blockd/schema"
)

func TestParseAddress(t *testing.T) {
	for spec, ok := range map[string]bool{"unix:/x.sock": true, "tcp:127.0.0.1:9100": true, "tcp::9100": true,
		"unix:": false, "tcp:nohost": false, "http://x": false, "/x.sock": false} {
		if _, _, err := ParseAddress(spec); (err == nil) != ok {
			t.Errorf("%q: err %v", spec, err)
		}
	}
}

// A scrape while the owner is stuck in a long command answers (without
// graph metrics) after OwnerTimeout and counts the timeout.
func TestScrapeDoesNotHangOnBusyOwner(t *testing.T) {
	o := blockcore.NewOwner(schema.NewRegistry())
	m := New(Sources{Owner: o, Graph: blockcore.NewGraph(zap.NewNop(), events.NewBus())})
	go o.Run()
	defer o.Stop()
	release := make(chan struct{})
	go func() { _ = o.Do(func() { <-release }) }()
	defer close(release)
	time.Sleep(50 * time.Millisecond) // let the owner take the blocking input
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	done := make(chan string, 1)
	go func() {
		// The counter is gathered beside the collector, so the first
		// scrape may show it before its own increment: look at a second.
		if resp, err := srv.Client().Get(srv.URL); err == nil {
			_ = resp.Body.Close()
		}
		resp, err := srv.Client().Get(srv.URL)
		if err != nil {
			done <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		done <- string(b)
	}()
	select {
	case body := <-done:
		if !strings.Contains(body, "blockd_scrape_owner_timeouts_total 1\n") && !strings.Contains(body, "blockd_scrape_owner_timeouts_total 2\n") {
			t.Fatalf("scrape without the timeout counted:\n%s", body)
		}
	case <-time.After(2*OwnerTimeout + 20*time.Second):
		t.Fatal("scrape hung on a busy owner")
	}
}
