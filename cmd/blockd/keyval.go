package main

import "blockd/internal/keyval"

// parseKeyval parses QEMU's key=value,key=value syntax; see keyval.Parse.
func parseKeyval(s, implied string) (map[string]any, error) { return keyval.Parse(s, implied) }
