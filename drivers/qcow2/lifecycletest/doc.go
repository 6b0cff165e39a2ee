// Package lifecycletest holds the qcow2 engine's slow interop tests for
// resizing and internal snapshots, against qemu-img and qemu-io, in a
// package of their own so that they run beside the engine's other tests.
package lifecycletest
