// Package racechild owns how test suites start race-built child
// processes (blockd daemons, re-executed test binaries): without it every
// such child sleeps a second in its exit.
package racechild

import "os"

// NoExitSleep makes race-built children of this process exit at once.
// The race runtime sleeps atexit_sleep_ms (1 s by default) before every
// exit so that goroutines still running can report late races; the suites
// start hundreds of short-lived children, and that second was most of
// their run time. Races a child finds before its exit are still printed
// and still fail it (exit status 66). Settings already in GORACE win,
// since the runtime takes the last value of each option.
func NoExitSleep() {
	_ = os.Setenv("GORACE", "atexit_sleep_ms=0 "+os.Getenv("GORACE"))
}
