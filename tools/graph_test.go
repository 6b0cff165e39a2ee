package tools

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startDaemon runs the blockd binary with args and waits until each of
// the sockets it creates accepts a connection (the file exists from
// bind(), a moment before listen()); the daemon is stopped when the test
// ends.
func startDaemon(t *testing.T, sockets []string, args ...string) {
	t.Helper()
	cmd := exec.Command(blockdBinary(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range sockets {
		for {
			if c, err := net.Dial("unix", s); err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("blockd did not create %s: %s", s, stderr.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// graphRun runs `blockd graph` in process.
func graphRun(t *testing.T, args ...string) result {
	t.Helper()
	var o, e bytes.Buffer
	code := Graph(args, Stdio{In: strings.NewReader(""), Out: &o, Err: &e})
	return result{o.String(), e.String(), code}
}

// TestGraphLiveCommit draws a daemon's graph while a speed-limited commit
// runs and an NBD export serves the top node: the DOT, parsed back, has
// the job as a box with its edges to the nodes it holds (with their roles
// and permissions), the export as a box using top, the chain with its
// backing and file edges, and the same graph comes over JSON-RPC.
func TestGraphLiveCommit(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", p("base.qcow2"), "64M")
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", p("mid.qcow2"))
	mustQemu(t, dir, "qemu-io", "-c", "write -P 1 0 8M", p("mid.qcow2"))
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", p("top.qcow2"))
	sock, rpc := p("m.sock"), p("r.sock")
	startDaemon(t, []string{sock, rpc}, "--socket", sock, "--jsonrpc", rpc, "--blockdev",
		fmt.Sprintf(`{"driver":"qcow2","node-name":"top","file":{"driver":"file","filename":%q}}`, p("top.qcow2")),
		"--nbd-server", "addr.type=unix,addr.path="+p("nbd.sock"), "--export", "type=nbd,id=e1,node-name=top,writable=on")

	c, err := dialQMP(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	// 1 byte/s keeps the job running for as long as the test needs.
	if _, err := c.execute("block-commit", map[string]any{"job-id": "c1", "device": "top",
		"top": p("mid.qcow2"), "speed": 1, "auto-finalize": false}); err != nil {
		t.Fatal(err)
	}

	r := graphRun(t, "--socket", sock)
	if r.code != 0 {
		t.Fatalf("blockd graph: %s", r)
	}
	vertices, edges, err := parseDOT(r.out)
	if err != nil {
		t.Fatalf("%v\n%s", err, r.out)
	}
	byLabel := map[string]string{} // first line of the label → vertex id
	for id, v := range vertices {
		first, _, _ := strings.Cut(v.Label, "\n")
		byLabel[first] = id
	}
	job, ok := byLabel["commit job (c1)"]
	if !ok || vertices[job].Shape != "box" {
		t.Fatalf("no commit job box in:\n%s", r.out)
	}
	top := byLabel["top [qcow2]"]
	if top == "" || !strings.HasSuffix(vertices[top].Label, p("top.qcow2")) || vertices[top].Shape != "ellipse" {
		t.Errorf("top vertex: %+v\n%s", vertices[top], r.out)
	}
	edgeLabels := map[string][]string{} // from → labels
	for _, e := range edges {
		if _, ok := vertices[e.From]; !ok {
			t.Errorf("edge from unknown vertex %s", e.From)
		}
		if _, ok := vertices[e.To]; !ok {
			t.Errorf("edge to unknown vertex %s", e.To)
		}
		parts := strings.Split(e.Label, `\l`)
		if len(parts) != 4 || len(parts[1]) != 4 || len(parts[2]) != 4 {
			t.Errorf("edge label %q is not role\\lperm\\lshared\\l", e.Label)
		}
		edgeLabels[e.From] = append(edgeLabels[e.From], e.Label)
	}
	jobEdges := strings.Join(edgeLabels[job], " ")
	// The job holds the node it commits from, the base and the
	// intermediate layers; its backend writes base.
	for _, want := range []string{`base\l`, "main node", "intermediate node"} {
		if !strings.Contains(jobEdges, want) {
			t.Errorf("the job's edges %q lack %q:\n%s", jobEdges, want, r.out)
		}
	}
	// The export is a box of its own, using top with write permission.
	exp, ok := byLabel["nbd export 'e1'"]
	if !ok || vertices[exp].Shape != "box" {
		t.Errorf("no export box in:\n%s", r.out)
	}
	expEdge := false
	for _, e := range edges {
		expEdge = expEdge || e.From == exp && e.To == top && strings.HasPrefix(e.Label, `root\lwr`)
	}
	if !expEdge {
		t.Errorf("no edge from the export to top with write permission:\n%s", r.out)
	}
	base := byLabel["[qcow2]"]
	for id, v := range vertices {
		if strings.Contains(v.Label, "[qcow2]\n") && strings.HasSuffix(v.Label, p("base.qcow2")) {
			base = id
		}
	}
	writer := false
	for _, e := range edges {
		writer = writer || e.To == base && vertices[e.From].Label == "unnamed blk" && strings.HasPrefix(e.Label, `root\lwr`)
	}
	if !writer {
		t.Errorf("no backend writing base (%s):\n%s", base, r.out)
	}
	var roles []string
	for _, e := range edges {
		roles = append(roles, strings.Split(e.Label, `\l`)[0])
	}
	for _, want := range []string{"file", "backing"} {
		if !strings.Contains(strings.Join(roles, " "), want) {
			t.Errorf("no %s edge in:\n%s", want, r.out)
		}
	}

	// The same graph over JSON-RPC, and its raw form.
	if r2 := graphRun(t, "--jsonrpc", rpc); r2.code != 0 || r2.out != r.out {
		t.Errorf("graph over JSON-RPC differs:\n%s\nQMP:\n%s", r2, r.out)
	}
	if r3 := graphRun(t, "--socket", sock, "--format", "json"); r3.code != 0 || !strings.Contains(r3.out, `"block-job"`) {
		t.Errorf("--format json: %s", r3)
	}

	t.Run("graphviz", func(t *testing.T) {
		if _, err := exec.LookPath("dot"); err != nil {
			msg := "graphviz's dot not found: blockd graph --format svg/png NOT TESTED"
			if os.Getenv("BLOCKD_REQUIRE_QEMU") == "1" {
				t.Fatal(msg + " (CI installs graphviz)")
			}
			fmt.Fprintln(os.Stderr, "*** WARNING:", msg)
			t.Skip(msg)
		}
		canon := exec.Command("dot", "-Tcanon")
		canon.Stdin = strings.NewReader(r.out)
		if out, err := canon.CombinedOutput(); err != nil {
			t.Errorf("dot -Tcanon refuses the DOT: %v\n%s", err, out)
		} else if !strings.Contains(string(out), "commit job (c1)") {
			t.Errorf("dot -Tcanon lost the job:\n%s", out)
		}
		svg := graphRun(t, "--socket", sock, "--format", "svg")
		if svg.code != 0 || !strings.Contains(svg.out, "<svg") || !strings.Contains(svg.out, "commit job (c1)") {
			t.Errorf("--format svg: exit %d, %.300s", svg.code, svg.out)
		}
		png := graphRun(t, "--socket", sock, "--format", "png", "-o", p("g.png"))
		b, _ := os.ReadFile(p("g.png"))
		if png.code != 0 || !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Errorf("--format png -o: %s (%d bytes)", png, len(b))
		}
	})
}

func TestGraphErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "give one of --socket PATH or --jsonrpc PATH"},
		{[]string{"--socket", "a", "--jsonrpc", "b"}, "give one of --socket PATH or --jsonrpc PATH"},
		{[]string{"--socket", filepath.Join(dir, "none.sock")}, "cannot connect to"},
		{[]string{"--socket", "x", "--format", "pdf"}, "--format must be dot, svg, png or json, not 'pdf'"},
		{[]string{"--bogus"}, "unrecognized option '--bogus'"},
	} {
		r := graphRun(t, c.args...)
		if r.code != 1 || !strings.Contains(r.err, c.want) {
			t.Errorf("%v: want %q: %s", c.args, c.want, r)
		}
	}
}

// The DOT writer and reader agree on labels with quotes, backslashes,
// newlines and \l line ends.
func TestDOTQuoting(t *testing.T) {
	src := "digraph {\n\t1 [label=" + dotQuote("a \"b\" c\\d\ne", false) + " shape=box]\n\t1 -> 1 [label=" +
		dotQuote(`x\l"y"\l`, true) + "]\n}\n"
	v, e, err := parseDOT(src)
	if err != nil {
		t.Fatal(err)
	}
	if v["1"].Label != "a \"b\" c\\d\ne" || v["1"].Shape != "box" || len(e) != 1 || e[0].Label != `x\l"y"\l` {
		t.Errorf("round trip: %+v %+v", v, e)
	}
	if _, _, err := parseDOT("graph {}"); err == nil {
		t.Error("parseDOT accepted a non-digraph")
	}
}
