package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"blockd/schema"
)

// optionArg is a command line option that becomes QMP-style arguments
// (--nbd-server, --export), from keyval or JSON syntax.
type optionArg struct {
	spec   string
	args   json.RawMessage
	keyval bool
}

func parseOptionArg(opt, spec, implied string) (optionArg, error) {
	if strings.HasPrefix(strings.TrimSpace(spec), "{") {
		if !json.Valid([]byte(spec)) {
			return optionArg{}, &cliError{opt, spec, "JSON parse error"}
		}
		return optionArg{spec: spec, args: json.RawMessage(spec)}, nil
	}
	kv, err := parseKeyval(spec, implied)
	if err != nil {
		return optionArg{}, &cliError{opt, spec, err.Error()}
	}
	b, _ := json.Marshal(kv)
	return optionArg{spec: spec, args: b, keyval: true}, nil
}

func (cfg *config) addNbdServer(spec string) error {
	a, err := parseOptionArg("nbd-server", spec, "")
	if err != nil {
		return err
	}
	cfg.nbdServer = &a
	return nil
}

func (cfg *config) addExport(spec string) error {
	a, err := parseOptionArg("export", spec, "type")
	if err != nil {
		return err
	}
	cfg.exports = append(cfg.exports, a)
	return nil
}

// startExports starts the NBD server and the exports of the command line,
// after the nodes, as qemu-storage-daemon does; a failure ends blockd.
func (d *daemon) startExports() error {
	if a := d.cfg.nbdServer; a != nil {
		var o schema.NbdServerOptions
		var err error
		if a.keyval {
			err = schema.DecodeKeyval(a.args, &o)
		} else {
			err = schema.Decode(a.args, &o)
		}
		if err == nil {
			doErr := d.owner.Do(func() { err = d.exps.StartNBD(o.Addr, o.TLSCreds, o.TLSAuthz, o.MaxConnections, true) })
			if doErr != nil {
				err = doErr
			}
		}
		if err != nil {
			return fmt.Errorf("--nbd-server %s: %s", a.spec, err)
		}
	}
	for _, a := range d.cfg.exports {
		ctx := schema.WithKeyval(context.Background(), a.keyval)
		if _, err := d.owner.Call(ctx, "block-export-add", a.args); err != nil {
			return fmt.Errorf("--export %s: %s", a.spec, err)
		}
	}
	return nil
}
