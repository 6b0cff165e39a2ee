package operators

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	qmptest "blockd/tests/qmp"
)

// operatorDaemon runs blockd on a qcow2 overlay (top, on base) exported
// writable over NBD, with --metrics on a Unix socket and JSON logs.
type operatorDaemon struct {
	d       *qmptest.Daemon
	c       *qmptest.Client
	dir     string
	nbdURI  string
	metrics *http.Client
}

func startOperatorDaemon(t *testing.T) *operatorDaemon {
	img, io := qmptest.QemuTool(t, "qemu-img"), qmptest.QemuTool(t, "qemu-io")
	dir := t.TempDir()
	for _, c := range []string{
		img + " create -q -f qcow2 base.qcow2 64M",
		io + " -f qcow2 -c 'write -P 0x11 0 4M' base.qcow2 >/dev/null",
		img + " create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2",
		io + " -f qcow2 -c 'write -P 0x22 0 2M' top.qcow2 >/dev/null",
	} {
		qmptest.RunShell(t, dir, c, 0)
	}
	msock, nsock := filepath.Join(dir, "metrics.sock"), filepath.Join(dir, "nbd.sock")
	d := qmptest.StartDaemon(t, blockdBin, dir,
		"--blockdev", fmt.Sprintf(`{"driver":"qcow2","node-name":"top","file":{"driver":"file","filename":%q}}`, filepath.Join(dir, "top.qcow2")),
		"--nbd-server", "addr.type=unix,addr.path="+nsock,
		"--export", "type=nbd,id=e,node-name=top,writable=on",
		"--metrics", "unix:"+msock, "--log-format", "json")
	o := &operatorDaemon{d: d, dir: dir, nbdURI: "nbd+unix:///top?socket=" + nsock,
		metrics: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", msock)
			}}}}
	o.c = qmptest.Dial(t, d.Sock)
	o.c.Negotiate(t)
	t.Cleanup(func() { o.c.Close(); d.Stop(t) })
	return o
}

// scrape fetches the endpoint and returns its samples by series.
func (o *operatorDaemon) scrape() (map[string]float64, error) {
	resp, err := o.metrics.Get("http://blockd/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("bad sample %q", l)
		}
		out[l[:i]] = v
	}
	return out, sc.Err()
}

func (o *operatorDaemon) mustScrape(t *testing.T) map[string]float64 {
	t.Helper()
	m, err := o.scrape()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (o *operatorDaemon) qemuIO(t *testing.T, cmds ...string) {
	t.Helper()
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	if out, err := exec.Command("qemu-io", append(args, o.nbdURI)...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io %v: %v\n%s", cmds, err, out)
	}
}

// Bytes written through the NBD export by qemu-io move the export's and
// the node's write counters by exactly that many bytes; the endpoint
// answers 1000 scrapes while clients write; a commit job shows up with its
// status and progress, under the uuid its log lines carry.
func TestMetricsDuringIOAndJob(t *testing.T) {
	o := startOperatorDaemon(t)
	exportW := `blockd_export_bytes_total{export="e",op="write"}`
	nodeW := `blockd_node_bytes_total{driver="qcow2",node="top",op="write"}`
	before := o.mustScrape(t)
	if _, ok := before[exportW]; !ok {
		t.Fatalf("no %s in the scrape", exportW)
	}
	o.qemuIO(t, "write -P 0x33 1M 1M", "write -P 0x44 8M 64k")
	after := o.mustScrape(t)
	for _, s := range []string{exportW, nodeW} {
		if d := after[s] - before[s]; d != 1<<20+64<<10 {
			t.Errorf("%s moved by %v, want %d", s, d, 1<<20+64<<10)
		}
	}
	// Reads count the same, also those sent from the file's pages
	// without a copy (a whole allocated MiB is such a read).
	exportR := `blockd_export_bytes_total{export="e",op="read"}`
	nodeR := `blockd_node_bytes_total{driver="qcow2",node="top",op="read"}`
	o.qemuIO(t, "read -P 0x33 1M 1M", "read -P 0x44 8M 64k")
	after = o.mustScrape(t)
	for _, s := range []string{exportR, nodeR} {
		if d := after[s] - before[s]; d != 1<<20+64<<10 {
			t.Errorf("%s moved by %v, want %d", s, d, 1<<20+64<<10)
		}
	}
	// qemu-io has exited, but the server notices its connection close
	// on its own goroutine: wait for that rather than race it.
	conns := `blockd_export_connections{export="e",node="top",type="nbd"}`
	for deadline := time.Now().Add(qmptest.ReplyTimeout); after[conns] != 0; after = o.mustScrape(t) {
		if time.Now().After(deadline) {
			t.Fatalf("export still counts %v connections after qemu-io left", after[conns])
		}
		time.Sleep(10 * time.Millisecond)
	}
	if after[`blockd_client_connections_total{protocol="qmp"}`] < 1 ||
		after[`blockd_commands_total{command="qmp_capabilities",protocol="qmp",result="ok"}`] < 1 {
		t.Errorf("clients and commands not counted")
	}

	// 1000 scrapes from two goroutines while qemu-io writes and reads.
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x55 16M 1M", "-c", "read -P 0x55 16M 1M", o.nbdURI).CombinedOutput(); err != nil {
				errs <- fmt.Errorf("qemu-io under scrapes: %v %s", err, out)
				return
			}
		}
	}()
	var scrapes sync.WaitGroup
	for range 2 {
		scrapes.Add(1)
		go func() {
			defer scrapes.Done()
			for range 500 {
				m, err := o.scrape()
				if err == nil && len(m) == 0 {
					err = fmt.Errorf("empty scrape")
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	scrapes.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// A commit job at a crawl: it is listed with its uuid and progress.
	if r, _ := o.c.Command(t, "block-commit", map[string]any{"device": "top", "job-id": "c1", "speed": 65536}); r["error"] != nil {
		t.Fatalf("block-commit: %v", r)
	}
	re := regexp.MustCompile(`^blockd_job_info\{job="c1",job_uuid="([0-9a-f-]{36})",status="(running|ready)",type="commit"\}$`)
	var jobUUID string
	m := o.mustScrape(t)
	for s, v := range m {
		if g := re.FindStringSubmatch(s); g != nil && v == 1 {
			jobUUID = g[1]
		}
	}
	if jobUUID == "" {
		t.Fatalf("no blockd_job_info for c1 in %v", keysWith(m, "job"))
	}
	// The job's worker sets its total once it has looked at the chain,
	// a moment after the command's reply: wait for it rather than race.
	total := `blockd_job_progress_total{job="c1",type="commit"}`
	for deadline := time.Now().Add(qmptest.ReplyTimeout); m[total] <= 0; m = o.mustScrape(t) {
		if time.Now().After(deadline) {
			t.Fatalf("job total progress not shown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	o.c.Command(t, "block-job-set-speed", map[string]any{"device": "c1", "speed": 0})
	o.c.WaitEvent(t, "BLOCK_JOB_READY")
	o.c.Command(t, "block-job-complete", map[string]any{"device": "c1"})
	o.c.WaitEvent(t, "BLOCK_JOB_COMPLETED")
	m = o.mustScrape(t)
	for s := range m {
		if strings.Contains(s, `job="c1"`) {
			t.Errorf("dismissed job still in metrics: %s", s)
		}
	}
	if !strings.Contains(o.d.Stderr(), jobUUID) {
		t.Errorf("the job's uuid %s from the metrics is not in the logs", jobUUID)
	}
}

// One client starts a commit; its log lines, JSON, are followed from the
// command (connection uuid) through the job's uuid to completion and
// dismissal, with a second client's dismissal of a job named by it too.
func TestLogsFollowJobByUUID(t *testing.T) {
	o := startOperatorDaemon(t)
	o.c.Command(t, "block-commit", map[string]any{"device": "top", "job-id": "c2", "auto-dismiss": false})
	o.c.WaitEvent(t, "BLOCK_JOB_READY")
	o.c.Command(t, "block-job-complete", map[string]any{"device": "c2"})
	o.c.WaitEvent(t, "BLOCK_JOB_COMPLETED")
	other := qmptest.Dial(t, o.d.Sock)
	other.Negotiate(t)
	if r, _ := other.Command(t, "job-dismiss", map[string]any{"id": "c2"}); r["error"] != nil {
		t.Fatalf("job-dismiss: %v", r)
	}
	other.Close()
	// stderr reaches the test through a pipe and a copying goroutine, so
	// the reply can arrive before the log lines written just before it.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(o.d.Stderr(), `"msg":"job dismissed"`) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}

	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(o.d.Stderr()), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("non-JSON log line %q", l)
		}
		lines = append(lines, v)
	}
	str := func(v map[string]any, k string) string { s, _ := v[k].(string); return s }
	var created map[string]any
	for _, v := range lines {
		if str(v, "msg") == "job created" && str(v, "job") == "c2" {
			created = v
		}
	}
	if created == nil {
		t.Fatalf("no 'job created' line for c2")
	}
	jobUUID, conn := str(created, "job_uuid"), str(created, "conn")
	if len(jobUUID) != 36 || len(conn) != 36 || str(created, "command") != "block-commit" {
		t.Fatalf("job created line lacks ids: %v", created)
	}
	// The command that started it, on the same connection.
	found := false
	for _, v := range lines {
		if str(v, "msg") == "command received" && str(v, "conn") == conn && str(v, "command") == "block-commit" {
			found = true
		}
	}
	if !found {
		t.Errorf("no 'command received' block-commit line for connection %s", conn)
	}
	// grep job_uuid: every status from created to null, then dismissed.
	var trail []string
	dismissConn := ""
	for _, v := range lines {
		if str(v, "job_uuid") != jobUUID {
			continue
		}
		switch str(v, "msg") {
		case "job status changed":
			trail = append(trail, str(v, "to"))
			if str(v, "to") == "null" {
				dismissConn = str(v, "conn")
			}
		default:
			trail = append(trail, str(v, "msg"))
		}
	}
	want := "job created created running ready waiting pending job finished concluded null job dismissed"
	if got := strings.Join(trail, " "); got != want {
		t.Errorf("log trail of job %s:\n got  %s\n want %s", jobUUID, got, want)
	}
	if dismissConn == "" || dismissConn == conn {
		t.Errorf("dismissal by the second client names connection %q (creator %s)", dismissConn, conn)
	}
}

func keysWith(m map[string]float64, sub string) []string {
	var out []string
	for k := range m {
		if strings.Contains(k, sub) {
			out = append(out, k)
		}
	}
	return out
}
