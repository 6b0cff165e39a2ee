package tools

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// `blockd graph` draws the live block graph of a running daemon: it asks
// over QMP or JSON-RPC for x-debug-query-block-graph (plus the node, job
// and export lists that give the vertices their labels) and prints it as
// Graphviz DOT, in the layout of QEMU's scripts/render_block_graph.py:
// block nodes are ellipses labelled "name [driver]" and their file name,
// jobs and other users (guest devices, exports, tools) are boxes, and every
// edge carries the child's role and the permissions it takes and shares
// (w write, r consistent-read, u write-unchanged, s resize). With
// --format svg or png the DOT goes through Graphviz's dot.

const graphUsage = `usage: blockd graph (--socket PATH | --jsonrpc PATH) [--format dot|svg|png|json] [-o FILE]

Draws the block graph of a running blockd (or qemu-storage-daemon) from
x-debug-query-block-graph. --socket is a QMP monitor socket, --jsonrpc a
JSON-RPC socket. dot (the default) prints Graphviz source; svg and png run
Graphviz's dot; json prints the query's answer as it came.
`

// Graph runs `blockd graph ARGS`.
func Graph(args []string, s Stdio) int {
	t := newTool("blockd graph", s)
	defer t.out.Flush()
	opts, operands, err := getopt(args, optSpec{short: "ho:", permute: true, long: map[string]longOpt{
		"help": {'h', false}, "socket": {'s', true}, "jsonrpc": {'j', true}, "format": {'f', true},
		"output": {'o', true},
	}})
	if err != nil {
		t.errorf("%s\n%s", err, strings.TrimSpace(graphUsage))
		return 1
	}
	var sock, rpc, outFile string
	format := "dot"
	for _, o := range opts {
		switch o.key {
		case 'h':
			t.printf("%s", graphUsage)
			return 0
		case 's':
			sock = o.arg
		case 'j':
			rpc = o.arg
		case 'f':
			format = o.arg
		case 'o':
			outFile = o.arg
		}
	}
	switch {
	case len(operands) > 0:
		t.errorf("unexpected argument: %s", operands[0])
		return 1
	case (sock == "") == (rpc == ""):
		t.errorf("give one of --socket PATH or --jsonrpc PATH\n%s", strings.TrimSpace(graphUsage))
		return 1
	}
	switch format {
	case "dot", "svg", "png", "json":
	default:
		t.errorf("--format must be dot, svg, png or json, not '%s'", format)
		return 1
	}
	var c *monitorClient
	if sock != "" {
		c, err = dialQMP(sock)
	} else {
		c, err = dialJSONRPC(rpc)
	}
	if err != nil {
		t.errorf("%s", err)
		return 1
	}
	defer c.close()
	g, err := fetchGraph(c)
	if err != nil {
		t.errorf("%s", err)
		return 1
	}
	var out []byte
	switch format {
	case "json":
		var buf bytes.Buffer
		_ = json.Indent(&buf, g.raw, "", "    ")
		out = append(buf.Bytes(), '\n')
	case "dot":
		out = []byte(g.dot())
	default:
		if out, err = runDot(g.dot(), format); err != nil {
			t.errorf("%s", err)
			return 1
		}
	}
	if outFile != "" {
		if err := os.WriteFile(outFile, out, 0o644); err != nil {
			t.errorf("%s", err)
			return 1
		}
		return 0
	}
	_, _ = t.out.Write(out)
	return 0
}

// runDot renders DOT source with Graphviz.
func runDot(src, format string) ([]byte, error) {
	path, err := exec.LookPath("dot")
	if err != nil {
		return nil, fmt.Errorf("--format %s needs Graphviz's dot, which is not installed (--format dot prints the source)", format)
	}
	cmd := exec.Command(path, "-T"+format)
	cmd.Stdin = strings.NewReader(src)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("dot -T%s: %v: %s", format, err, strings.TrimSpace(e.String()))
	}
	return o.Bytes(), nil
}

// monitorClient sends commands over QMP or JSON-RPC and returns results.
type monitorClient struct {
	conn    net.Conn
	r       *bufio.Reader
	jsonrpc bool
	id      int
}

func dial(path string) (net.Conn, error) {
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to %s: %v", path, err)
	}
	// A daemon that stops answering must not hang the tool.
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	return conn, nil
}

func dialQMP(path string) (*monitorClient, error) {
	conn, err := dial(path)
	if err != nil {
		return nil, err
	}
	c := &monitorClient{conn: conn, r: bufio.NewReaderSize(conn, 1<<20)}
	var greeting struct {
		QMP json.RawMessage `json:"QMP"`
	}
	if err := c.readMsg(&greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("%s: no QMP greeting (%v)", path, err)
	}
	if _, err := c.execute("qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func dialJSONRPC(path string) (*monitorClient, error) {
	conn, err := dial(path)
	if err != nil {
		return nil, err
	}
	return &monitorClient{conn: conn, r: bufio.NewReaderSize(conn, 1<<20), jsonrpc: true}, nil
}

func (c *monitorClient) close() { c.conn.Close() }

func (c *monitorClient) readMsg(v any) error {
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		return err
	}
	return json.Unmarshal(line, v)
}

// monitorError is a command's error reply.
type monitorError struct{ Class, Desc string }

func (e *monitorError) Error() string { return e.Desc }

// execute runs one command and returns its result, skipping events.
func (c *monitorClient) execute(cmd string, args any) (json.RawMessage, error) {
	c.id++
	var req map[string]any
	if c.jsonrpc {
		req = map[string]any{"jsonrpc": "2.0", "id": c.id, "method": cmd}
		if args != nil {
			req["params"] = args
		}
	} else {
		req = map[string]any{"execute": cmd, "id": c.id}
		if args != nil {
			req["arguments"] = args
		}
	}
	b, _ := json.Marshal(req)
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return nil, err
	}
	for {
		var m struct {
			ID     *int            `json:"id"`
			Return json.RawMessage `json:"return"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
				Data  *struct {
					Class string `json:"class"`
					Desc  string `json:"desc"`
				} `json:"data"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := c.readMsg(&m); err != nil {
			return nil, fmt.Errorf("%s: %v", cmd, err)
		}
		if m.ID == nil || *m.ID != c.id {
			continue // an event or a notification
		}
		if m.Error != nil {
			e := &monitorError{m.Error.Class, m.Error.Desc}
			if m.Error.Data != nil {
				e = &monitorError{m.Error.Data.Class, m.Error.Data.Desc}
			}
			return nil, e
		}
		if c.jsonrpc {
			return m.Result, nil
		}
		return m.Return, nil
	}
}

// liveGraph is the answer of x-debug-query-block-graph with the labels
// the other queries give.
type liveGraph struct {
	raw   json.RawMessage
	Nodes []struct {
		ID   int64  `json:"id"`
		Type string `json:"type"`
		Name string `json:"name"`
	} `json:"nodes"`
	Edges []struct {
		Parent int64    `json:"parent"`
		Child  int64    `json:"child"`
		Name   string   `json:"name"`
		Perm   []string `json:"perm"`
		Shared []string `json:"shared-perm"`
	} `json:"edges"`
	drivers map[string][2]string // node-name → driver, file
	jobs    map[string]string    // job id → type
	exports map[string][]string  // node-name → export ids
}

func fetchGraph(c *monitorClient) (*liveGraph, error) {
	raw, err := c.execute("x-debug-query-block-graph", nil)
	if err != nil {
		return nil, fmt.Errorf("x-debug-query-block-graph: %v", err)
	}
	g := &liveGraph{raw: raw, drivers: map[string][2]string{}, jobs: map[string]string{}, exports: map[string][]string{}}
	if err := json.Unmarshal(raw, g); err != nil {
		return nil, fmt.Errorf("x-debug-query-block-graph: %v", err)
	}
	if r, err := c.execute("query-named-block-nodes", map[string]any{"flat": true}); err == nil {
		var nodes []struct {
			NodeName string `json:"node-name"`
			Drv      string `json:"drv"`
			File     string `json:"file"`
		}
		if json.Unmarshal(r, &nodes) == nil {
			for _, n := range nodes {
				g.drivers[n.NodeName] = [2]string{n.Drv, n.File}
			}
		}
	}
	if r, err := c.execute("query-jobs", nil); err == nil {
		var jobs []struct {
			ID   string `json:"id"`
			Type string `json:"type"`
		}
		if json.Unmarshal(r, &jobs) == nil {
			for _, j := range jobs {
				g.jobs[j.ID] = j.Type
			}
		}
	}
	// Exports are optional: a daemon without them answers CommandNotFound.
	if r, err := c.execute("query-block-exports", nil); err == nil {
		var exps []struct {
			ID       string `json:"id"`
			Type     string `json:"type"`
			NodeName string `json:"node-name"`
		}
		if json.Unmarshal(r, &exps) == nil {
			for _, e := range exps {
				g.exports[e.NodeName] = append(g.exports[e.NodeName], e.Type+" export '"+e.ID+"'")
			}
		}
	}
	return g, nil
}

// permString is render_block_graph.py's perm(): w r u s, '_' when absent.
func permString(p []string) string {
	has := func(n string) bool {
		for _, x := range p {
			if x == n {
				return true
			}
		}
		return false
	}
	s := []byte("____")
	for i, n := range []string{"write", "consistent-read", "write-unchanged", "resize"} {
		if has(n) {
			s[i] = "wrus"[i]
		}
	}
	return string(s)
}

// dot renders the graph as Graphviz source.
func (g *liveGraph) dot() string {
	var b strings.Builder
	b.WriteString("digraph {\n\t// Block Nodes Graph\n")
	b.WriteString("\tlegend [label=" + dotQuote(`permission symbols:\l  w - Write\l  r - consistent-Read\l`+
		`  u - write - Unchanged\l  s - reSize\ledge label scheme:\l  <child type>\l  <perm>\l  <shared_perm>\l`, true) +
		" shape=none]\n")
	// The node a user vertex (backend, job) is attached to, for export labels.
	target := map[int64]string{}
	names := map[int64]string{}
	for _, n := range g.Nodes {
		names[n.ID] = n.Name
	}
	for _, e := range g.Edges {
		if _, ok := target[e.Parent]; !ok {
			target[e.Parent] = names[e.Child]
		}
	}
	usedExport := map[string]int{}
	for _, n := range g.Nodes {
		var label, shape string
		switch n.Type {
		case "block-driver":
			d := g.drivers[n.Name]
			label = n.Name + " [" + d[0] + "]"
			if d[1] != "" {
				label += "\n" + d[1]
			}
			shape = "ellipse"
		case "block-job":
			typ := g.jobs[n.Name]
			if typ == "" {
				typ = "block"
			}
			label, shape = typ+" job ("+n.Name+")", "box"
		default:
			label, shape = n.Name, "box"
			if label == "" {
				label = "unnamed blk"
				// An unnamed backend on an exported node is the export.
				if exps := g.exports[target[n.ID]]; usedExport[target[n.ID]] < len(exps) {
					label = exps[usedExport[target[n.ID]]]
					usedExport[target[n.ID]]++
				}
			}
		}
		fmt.Fprintf(&b, "\t%d [label=%s shape=%s]\n", n.ID, dotQuote(label, false), shape)
	}
	for _, e := range g.Edges {
		label := e.Name + `\l` + permString(e.Perm) + `\l` + permString(e.Shared) + `\l`
		fmt.Fprintf(&b, "\t%d -> %d [label=%s]\n", e.Parent, e.Child, dotQuote(label, true))
	}
	b.WriteString("}\n")
	return b.String()
}

// dotQuote makes a DOT string: quotes and backslashes escaped, newlines
// as \n; with escapes, \l (left-justified line ends) is kept as written.
func dotQuote(s string, escapes bool) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			if escapes && i+1 < len(s) && s[i+1] == 'l' {
				b.WriteString(`\l`)
				i++
			} else {
				b.WriteString(`\\`)
			}
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// parseDOT reads back the subset of DOT that dot() writes: vertex lines
// `ID [label="..." shape=...]` and edge lines `A -> B [label="..."]`. It
// returns the labels by vertex id and the edges; anything else is an error.
func parseDOT(src string) (vertices map[string]dotVertex, edges []dotEdge, err error) {
	lines := strings.Split(strings.TrimSpace(src), "\n")
	if len(lines) < 2 || lines[0] != "digraph {" || lines[len(lines)-1] != "}" {
		return nil, nil, errors.New("not a digraph { ... } block")
	}
	vertices = map[string]dotVertex{}
	for _, l := range lines[1 : len(lines)-1] {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "//") {
			continue
		}
		head, attrs, ok := strings.Cut(l, " [")
		if !ok || !strings.HasSuffix(attrs, "]") {
			return nil, nil, fmt.Errorf("line %q: no attribute list", l)
		}
		kv, err := parseDOTAttrs(strings.TrimSuffix(attrs, "]"))
		if err != nil {
			return nil, nil, fmt.Errorf("line %q: %v", l, err)
		}
		if a, b, isEdge := strings.Cut(head, " -> "); isEdge {
			edges = append(edges, dotEdge{From: a, To: b, Label: kv["label"]})
		} else {
			vertices[head] = dotVertex{Label: kv["label"], Shape: kv["shape"]}
		}
	}
	return vertices, edges, nil
}

type dotVertex struct{ Label, Shape string }

type dotEdge struct{ From, To, Label string }

func parseDOTAttrs(s string) (map[string]string, error) {
	out := map[string]string{}
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		k, rest, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("attribute without value: %q", s)
		}
		if strings.HasPrefix(rest, `"`) {
			v, n, err := unquoteDOT(rest)
			if err != nil {
				return nil, err
			}
			out[k], s = v, rest[n:]
		} else {
			v, r, _ := strings.Cut(rest, " ")
			out[k], s = v, r
		}
	}
	return out, nil
}

// unquoteDOT reads a quoted DOT string at the start of s, undoing
// dotQuote (\n becomes a newline, \l stays), and returns its length.
func unquoteDOT(s string) (string, int, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '"':
			return b.String(), i + 1, nil
		case '\\':
			if i+1 >= len(s) {
				return "", 0, errors.New("unterminated escape")
			}
			i++
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			case 'l':
				b.WriteString(`\l`)
			default:
				b.WriteByte(s[i])
			}
		default:
			b.WriteByte(s[i])
		}
	}
	return "", 0, errors.New("unterminated string " + strconv.Quote(s))
}
