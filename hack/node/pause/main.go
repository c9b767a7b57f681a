// Command pause is the local node's pod sandbox ("pause") image: it holds the
// pod's namespaces and does nothing else. Built by hack/node.sh with
// CGO_ENABLED=0 into a one-file image, since no registry can be reached here.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// As PID 1 of the sandbox: exit cleanly on SIGINT/SIGTERM, and reap the
	// zombies of a shared PID namespace.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
