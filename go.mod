module blockd

go 1.26.8

require (
	github.com/digitalocean/go-qemu v0.0.0-20230711162256-2e3d0186973e
	github.com/google/uuid v1.6.0
	github.com/klauspost/compress v1.20.3
	github.com/sourcegraph/jsonrpc2 v0.2.3
	go.uber.org/zap v1.28.0
	golang.org/x/sys v0.50.0
)

require (
	github.com/digitalocean/go-libvirt v0.0.0-20220804181439-8648fbde413e // indirect
	go.uber.org/multierr v1.10.0 // indirect
)
