// Package blockcore owns the block graph: nodes, their children and roles,
// permissions, options, open/close and reopen, node replacement, and the
// single goroutine (Owner) through which every change to it is made.
// Drivers plug in through a registry; I/O goes to drivers directly and
// never through the owner.
package blockcore
