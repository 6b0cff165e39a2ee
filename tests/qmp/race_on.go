//go:build race

package qmptest

const raceEnabled = true
