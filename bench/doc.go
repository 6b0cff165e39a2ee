// Package bench measures what the block graph costs on the data path: the
// same requests on a bare drivers/file.File and through the nodes of a
// raw-on-file stack (Node.IO), on the same page-cached image. Results and
// the command to reproduce them are in docs/benchmarks.md.
package bench
