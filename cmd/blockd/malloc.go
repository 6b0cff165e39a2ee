package main

import (
	"os"
	"strings"
	"syscall"
)

// arenaTunable limits glibc's malloc to one arena. librbd and librados,
// loaded when the first rbd node opens, copy every written buffer into
// memory they allocate in the calling thread's arena. Go calls them from
// whichever threads run the requests, so glibc grows an arena per
// thread, each starting on fresh pages: with one arena an rbd write
// export takes half the page faults and about 12% less CPU
// (docs/benchmarks.md). glibc reads the tunable only when a process
// starts, and mallopt(M_ARENA_MAX) once Go's threads run leaves the
// arenas they already have, so the daemon re-executes itself with it.
const arenaTunable = "glibc.malloc.arena_max"

// reexecMarker is set in the re-executed daemon's environment, so that it
// never re-executes again, whatever glibc makes of GLIBC_TUNABLES.
const reexecMarker = "BLOCKD_MALLOC_REEXEC"

// limitMallocArenas re-executes the daemon with arenaTunable=1 added to
// GLIBC_TUNABLES unless the variable names arena_max already (the
// operator's own setting wins) or this process is the re-executed one.
// The process keeps its pid, arguments and inherited descriptors
// (socket activation's LISTEN_PID and LISTEN_FDS stay true). It returns
// only when the exec failed, and then the daemon runs as it is.
func limitMallocArenas() {
	cur := os.Getenv("GLIBC_TUNABLES")
	if strings.Contains(cur, arenaTunable) || os.Getenv(reexecMarker) != "" {
		return
	}
	v := arenaTunable + "=1"
	if cur != "" {
		v = cur + ":" + v
	}
	env := []string{"GLIBC_TUNABLES=" + v, reexecMarker + "=1"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GLIBC_TUNABLES=") && !strings.HasPrefix(kv, reexecMarker+"=") {
			env = append(env, kv)
		}
	}
	// The executable's own path, not /proc/self/exe: the process name
	// (ps, pkill, systemd) is the file name exec sees.
	exe, err := os.Executable()
	if err != nil {
		return
	}
	_ = syscall.Exec(exe, os.Args, env)
}
