package blockcore

import (
	"errors"
	"testing"

	"blockd/blockio"
)

const (
	R  = blockio.PermConsistentRead
	W  = blockio.PermWrite
	WU = blockio.PermWriteUnchanged
	RS = blockio.PermResize
	A  = blockio.PermAll
)

// The expected values are what qemu-storage-daemon 7.2 reports in
// x-debug-query-block-graph for the same situations.
func TestDefaultPerms(t *testing.T) {
	cases := []struct {
		name          string
		role          Role
		writable      bool
		perm, shared  blockio.Perm
		wantP, wantSh blockio.Perm
	}{
		{"qcow2 root, writable: file child", RoleImage, true, 0, A, R | W | RS, R | WU},
		{"qcow2 read-only: file child", RoleImage, false, 0, A, R, R | WU},
		{"qcow2 backing child of a root", RoleBacking, true, 0, A, 0, A},
		{"backing of a parent that does not share write", RoleBacking, true, R, R, R, R | WU},
		{"raw filter root", RoleFilteredPrimary, true, 0, A, 0, A},
		{"raw filter passing a writer through", RoleFilteredPrimary, true, R | W, R, R | W, R},
		{"raw window root: data child", RoleData | RolePrimary, true, 0, A, 0, R | W | WU},
		{"data child of a writer gains resize", RoleData | RolePrimary, true, W, A, W | RS, R | W | WU},
		{"write-unchanged implies write on data", RoleData | RolePrimary, true, WU, A, W | WU | RS, R | W | WU},
	}
	for _, c := range cases {
		p, s := DefaultPerms(c.role, NodeState{Writable: c.writable}, c.perm, c.shared)
		if p != c.wantP || s != c.wantSh {
			t.Errorf("%s: got perm %q shared %q, want %q / %q", c.name, p, s, c.wantP, c.wantSh)
		}
	}
}

// fakeImpl records the permission steps the graph takes on it.
type fakeImpl struct {
	blockio.Device
	failCheck      error
	set            blockio.Perm
	setShared      blockio.Perm
	checks, aborts int
	committedTimes int
}

func (f *fakeImpl) Close() error { return nil }
func (f *fakeImpl) CheckPerm(p, s blockio.Perm) error {
	f.checks++
	return f.failCheck
}
func (f *fakeImpl) SetPerm(p, s blockio.Perm) { f.set, f.setShared = p, s; f.committedTimes++ }
func (f *fakeImpl) AbortPerm()                { f.aborts++ }

type userParent string

func (u userParent) ParentDesc() string { return string(u) }

func newTestNode(g *Graph, name string) (*Node, *fakeImpl) {
	impl := &fakeImpl{}
	n := &Node{name: name, impl: impl, drv: &Driver{Name: "fake"}, io: newGate(impl, false)}
	g.nodes[name] = n
	g.named.add(n)
	return n, impl
}

func TestSecondWriterConflictsWithQemuText(t *testing.T) {
	g := NewGraph(nil, nil)
	f, fimpl := newTestNode(g, "f")
	q1, _ := newTestNode(g, "q1")
	q2, _ := newTestNode(g, "q2")
	t1 := &tx{}
	g.attach(q1, f, "file", RoleImage, t1)
	if err := t1.finish(g.refreshPerms([]*Node{q1}, nil, t1)); err != nil {
		t.Fatal(err)
	}
	if fimpl.set != R|W|RS || fimpl.setShared != R|WU {
		t.Fatalf("file perms after first user: %q / %q", fimpl.set, fimpl.setShared)
	}
	edge1 := *f.parents[0]

	t2 := &tx{}
	g.attach(q2, f, "file", RoleImage, t2)
	err := t2.finish(g.refreshPerms([]*Node{q2}, nil, t2))
	want := "Permission conflict on node 'f': permissions 'write, resize' are both required by node 'q1' (uses node 'f' as 'file' child) and unshared by node 'q2' (uses node 'f' as 'file' child)."
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	// Rollback: the edge is gone, q1's edge is as it was, the driver kept
	// its committed state.
	if len(f.parents) != 1 || *f.parents[0] != edge1 || len(q2.children) != 0 {
		t.Fatalf("graph not restored: parents %v children %v", f.parents, q2.children)
	}
	if fimpl.committedTimes != 1 {
		t.Fatalf("driver permissions were committed again: %d", fimpl.committedTimes)
	}
}

func TestRefusedDriverCheckRestoresEveryEdge(t *testing.T) {
	g := NewGraph(nil, nil)
	top, _ := newTestNode(g, "top")
	mid, _ := newTestNode(g, "mid")
	bottom, bimpl := newTestNode(g, "bottom")
	t0 := &tx{}
	g.attach(top, mid, "file", RoleImage, t0)
	g.attach(mid, bottom, "file", RoleImage, t0)
	if err := t0.finish(g.refreshPerms([]*Node{top}, nil, t0)); err != nil {
		t.Fatal(err)
	}
	before := [2]Child{*mid.parents[0], *bottom.parents[0]}

	// A user that wants to write through top; the bottom driver refuses.
	bimpl.failCheck = errors.New(`Failed to get "write" lock`)
	t1 := &tx{}
	user := userParent("block job 'j'")
	g.attach(user, top, "root", RoleFilteredPrimary, t1)
	top.parents[0].Perm, top.parents[0].Shared = R|W, R
	err := t1.finish(g.refreshPerms([]*Node{top}, nil, t1))
	if err == nil || err.Error() != `Failed to get "write" lock` {
		t.Fatalf("got %v", err)
	}
	if len(top.parents) != 0 {
		t.Fatal("user edge not removed")
	}
	if *mid.parents[0] != before[0] || *bottom.parents[0] != before[1] {
		t.Fatal("child edges changed by a refused update")
	}
	if bimpl.aborts != 0 && bimpl.checks == 0 {
		t.Fatal("abort without check")
	}
}

func TestReadOnlyNodeRefusesWriters(t *testing.T) {
	g := NewGraph(nil, nil)
	f, _ := newTestNode(g, "f")
	f.readOnly = true
	q, _ := newTestNode(g, "q")
	t1 := &tx{}
	g.attach(q, f, "file", RoleImage, t1)
	err := t1.finish(g.refreshPerms([]*Node{q}, nil, t1))
	if err == nil || err.Error() != "Block node is read-only" {
		t.Fatalf("got %v", err)
	}
	// Through a pending reopen to read-only the text names the node.
	g2 := NewGraph(nil, nil)
	f2, _ := newTestNode(g2, "f2")
	q2, _ := newTestNode(g2, "q2")
	t2 := &tx{}
	g2.attach(q2, f2, "file", RoleImage, t2)
	rq := newReopenQueue()
	rq.byNode[f2] = &reopenEntry{n: f2, state: ReopenState{ReadOnly: true}}
	err = t2.finish(g2.refreshPerms([]*Node{q2}, rq, t2))
	if err == nil || err.Error() != "Read-only block node 'f2' cannot support read-write users" {
		t.Fatalf("got %v", err)
	}
}

func TestForceShareSharesEverything(t *testing.T) {
	g := NewGraph(nil, nil)
	f, _ := newTestNode(g, "f")
	f.forceShare = true
	q, _ := newTestNode(g, "q")
	q.readOnly = true
	t1 := &tx{}
	g.attach(q, f, "file", RoleImage, t1)
	if err := t1.finish(g.refreshPerms([]*Node{q}, nil, t1)); err != nil {
		t.Fatal(err)
	}
	if f.parents[0].Shared != A {
		t.Fatalf("shared %q", f.parents[0].Shared)
	}
}

func TestTopoOrderParentsFirst(t *testing.T) {
	g := NewGraph(nil, nil)
	a, _ := newTestNode(g, "a")
	b, _ := newTestNode(g, "b")
	c, _ := newTestNode(g, "c")
	t0 := &tx{}
	g.attach(a, b, "file", RoleImage, t0)
	g.attach(a, c, "backing", RoleBacking, t0)
	g.attach(c, b, "file", RoleImage, t0) // b below both a and c
	order := topoOrder([]*Node{a})
	pos := map[*Node]int{}
	for i, n := range order {
		pos[n] = i
	}
	if !(pos[a] < pos[c] && pos[c] < pos[b]) {
		t.Fatalf("order %v", []string{order[0].name, order[1].name, order[2].name})
	}
}

// A job's filter closes when its last user leaves; the node below it
// must then lose what the filter passed down (stale write permission and
// unshared bits would keep image locks held), as a fresh open would have it.
func TestClosingFilterRelaxesFormerChild(t *testing.T) {
	g := NewGraph(nil, nil)
	base, bimpl := newTestNode(g, "base")
	base.monitorOwned = true
	f, err := g.InsertFilterAbove(base, "test-filter", "flt", "backing", func(p, s blockio.Perm) (blockio.Perm, blockio.Perm) { return p, s })
	if err != nil {
		t.Fatal(err)
	}
	u, err := g.AttachUser(userParent("job"), f, "root", R|W, R)
	if err != nil {
		t.Fatal(err)
	}
	if bimpl.set != R|W || bimpl.setShared != R {
		t.Fatalf("base perms with the job's writer: %q / %q", bimpl.set, bimpl.setShared)
	}
	g.DetachUser(u)
	if g.Lookup("flt") != nil {
		t.Fatal("filter nobody holds is still open")
	}
	if len(base.parents) != 0 {
		t.Fatalf("base still has parents: %v", base.parents)
	}
	if bimpl.set != 0 || bimpl.setShared != A {
		t.Fatalf("base perms after the filter closed: %q / %q, want none / all shared", bimpl.set, bimpl.setShared)
	}
}
